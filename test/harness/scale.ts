/**
 * Tests at scale (1 GiB layers, the whole Debian tree, reference conversions of the bench images)
 * run in the first vitest pass of scripts/test.sh only, which sets ESGZ_TEST_SCALE=0 for the
 * pass under the second Node: they take minutes each, and what they add under a second Node is
 * covered by the rest of the suite running there (the hostile-input bounds included).
 */
export const scaleTests = process.env.ESGZ_TEST_SCALE !== '0';

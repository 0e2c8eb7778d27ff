/**
 * Tests that take minutes (1 GiB layers, the whole Debian tree, reference conversions of the bench
 * images, the registry-quirk matrix of rpull + run + copy) run in the first vitest pass of
 * scripts/test.sh only, which sets ESGZ_TEST_LONG=0 for the pass under the second Node: what they
 * would add there (the same HTTP client, the same streaming code under another V8) is covered by
 * the rest of the suite running under both, the hostile-input bounds included.
 */
export const longTests = process.env.ESGZ_TEST_LONG !== '0';

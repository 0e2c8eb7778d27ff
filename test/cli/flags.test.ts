// Issue #13 item 1: a flag name means one thing in every command. Flags are defined once, in the
// sets of src/cli/flags.ts; this reads what the built CLI actually offers (oclif.manifest.json
// for the commands and flag names, the built command classes for what the manifest leaves out,
// such as min/max) and fails when one name has drifted apart between two commands.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../harness/cli.js';

interface ManifestFlag {
  name: string;
  type: string;
  char?: string;
  description?: string;
  default?: unknown;
  options?: string[];
  multiple?: boolean;
  hidden?: boolean;
  helpValue?: string;
}

interface Manifest {
  commands: Record<string, { flags: Record<string, ManifestFlag> }>;
}

type FlagClass = Record<string, { min?: number; max?: number } & Record<string, unknown>>;

/** What defines a flag for its user: everything but oclif's bookkeeping. */
function definition(flag: ManifestFlag, built: { min?: number; max?: number } | undefined): string {
  const { type, char, description, default: def, options, multiple, hidden, helpValue } = flag;
  return JSON.stringify({
    type,
    char,
    description,
    default: def,
    options,
    multiple,
    hidden,
    helpValue,
    min: built?.min,
    max: built?.max,
  });
}

/**
 * Names that are two flags on purpose: each command uses one of the sets named here, whole.
 * `platform` picks several platforms where a command writes an index (copy, convert, optimize)
 * and exactly one where it resolves one image (rpull, run, verify, get-toc-digest).
 */
const VARIANTS: Record<string, Array<{ set: string; flag: string }>> = {
  platform: [
    { set: 'platformsFlags', flag: 'platform' },
    { set: 'platformFlag', flag: 'platform' },
  ],
  // -u is the container user in run and optimize (as in ctr): there the registry user has no short form.
  'registry-user': [
    { set: 'registryFlags', flag: 'registry-user' },
    { set: 'workloadRegistryFlags', flag: 'registry-user' },
  ],
};

let manifest: Manifest;
/** command id → flag name → definition */
const definitions = new Map<string, Map<string, string>>();
let flagSets: Record<string, FlagClass>;

beforeAll(async () => {
  const manifestPath = join(repoRoot, 'oclif.manifest.json');
  if (!existsSync(manifestPath)) throw new Error('oclif.manifest.json is missing: run `npm run build` first');
  manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Manifest;
  for (const [id, command] of Object.entries(manifest.commands)) {
    const file = join(repoRoot, 'dist/commands', `${id.split(':').join('/')}.js`);
    const built = (await import(pathToFileURL(file).href)) as { default: { flags?: FlagClass; baseFlags?: FlagClass } };
    const classFlags = { ...built.default.baseFlags, ...built.default.flags };
    const byName = new Map<string, string>();
    for (const [name, flag] of Object.entries(command.flags)) byName.set(name, definition(flag, classFlags[name]));
    definitions.set(id, byName);
  }
  flagSets = (await import(pathToFileURL(join(repoRoot, 'dist/cli/flags.js')).href)) as Record<string, FlagClass>;
});

/** The definition a flag-set flag has once built into a command (as the manifest writes it). */
function setDefinition(set: string, flag: string): string {
  const built = flagSets[set]?.[flag];
  if (!built) throw new Error(`src/cli/flags.ts exports no ${set}.${flag}`);
  const {
    type,
    char,
    description,
    default: def,
    options,
    multiple,
    hidden,
    helpValue,
  } = built as unknown as ManifestFlag;
  return JSON.stringify({
    type,
    char,
    description,
    default: def,
    options,
    multiple: multiple ?? false,
    hidden,
    helpValue,
    min: built.min,
    max: built.max,
  });
}

describe('flags shared by several commands', () => {
  it('reads every command of the CLI', () => {
    expect(Object.keys(manifest.commands)).toEqual(
      expect.arrayContaining(['image:convert', 'image:optimize', 'image:copy', 'run', 'image:rpull']),
    );
  });

  it('have one definition per name (description, default, min/max, options, char), or one of its named variants', () => {
    const users = new Map<string, Map<string, string[]>>();
    for (const [id, flags] of definitions) {
      for (const [name, def] of flags) {
        const byDef = users.get(name) ?? new Map<string, string[]>();
        byDef.set(def, [...(byDef.get(def) ?? []), id]);
        users.set(name, byDef);
      }
    }
    const drift: string[] = [];
    for (const [name, byDef] of users) {
      if (byDef.size === 1) continue;
      const allowed = new Set((VARIANTS[name] ?? []).map((v) => setDefinition(v.set, v.flag)));
      for (const [def, ids] of byDef) {
        if (!allowed.has(def)) drift.push(`--${name} in ${ids.join(', ')}: ${def}`);
      }
    }
    expect(drift).toEqual([]);
  });

  it('the named variants are what those commands use', () => {
    const single = setDefinition('platformFlag', 'platform');
    const several = setDefinition('platformsFlags', 'platform');
    for (const id of ['image:rpull', 'image:verify', 'get-toc-digest'])
      expect(definitions.get(id)?.get('platform'), id).toBe(single);
    for (const id of ['image:copy', 'image:convert', 'image:optimize'])
      expect(definitions.get(id)?.get('platform'), id).toBe(several);
  });

  it('--estargz-compression-level has one range in convert and optimize', () => {
    const convert = definitions.get('image:convert')!.get('estargz-compression-level');
    expect(convert).toBeDefined();
    expect(definitions.get('image:optimize')!.get('estargz-compression-level')).toBe(convert);
  });
});

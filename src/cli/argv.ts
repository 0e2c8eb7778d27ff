// urfave/cli's command line in front of oclif's. Scripts written for ctr-remote use ctr's
// spellings: `images`/`i` for `image`, `help image convert`, `-h`, `--oci=true`, single-dash long
// flags (`-estargz`, Go's flag package takes both), and global flags before the command
// (`-n NS`, `--debug`). This rewrites such an argv into the one oclif parses, and turns the
// mistakes oclif would answer with a bare "not found" into one line with a suggestion.
import { EsgzError } from '../errors.js';

/** What the normalizer needs of a flag (oclif's manifest has it). */
export interface FlagShape {
  type: 'boolean' | 'option';
  char?: string;
  aliases?: string[];
}

/** What the normalizer needs of a command (oclif's manifest has it). */
export interface CommandShape {
  id: string;
  flags: Record<string, FlagShape>;
  /** Declared positional arguments, in order. */
  args: string[];
  /** False for `run`: words after its positionals are the container's command, never touched. */
  strict: boolean;
}

export interface CommandTable {
  commands: CommandShape[];
  /** Topic ids (`image`), which are not commands themselves. */
  topics: string[];
}

export interface NormalizedArgv {
  argv: string[];
  /** `--debug` was given: full errors on stderr, as DEBUG=esgz does. */
  debug: boolean;
}

/** ctr's spellings of the `image` topic. */
const TOPIC_ALIASES: Record<string, string> = { images: 'image', i: 'image' };

/** Go's strconv.ParseBool, which urfave/cli uses for `--flag=VALUE`. */
const TRUE_WORDS = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE_WORDS = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

const HELP_WORDS = new Set(['-h', '--help', '-help']);
const NAMESPACE_FLAG = 'namespace';
const NO_CONTAINERD =
  'esgz needs no containerd: it reads and writes registries, OCI layouts, archives and its own store directly';

/** Rewrites ctr-style argv into oclif's; throws a one-line BAD_FLAG error with a suggestion for typos. */
export function normalizeArgv(
  argv: readonly string[],
  table: CommandTable,
  env: Readonly<Record<string, string | undefined>> = {},
): NormalizedArgv {
  const globals = takeGlobalFlags(argv);
  // `help image convert` is `image convert --help`.
  const words = globals.rest[0] === 'help' ? [...globals.rest.slice(1), '--help'] : globals.rest;
  if (words[0] !== undefined && TOPIC_ALIASES[words[0]] !== undefined) words[0] = TOPIC_ALIASES[words[0]]!;
  const { command, idWords } = resolveCommand(words, table);
  if (command === undefined) return { argv: [...words, ...globals.moved], debug: globals.debug };
  if (env.CONTAINERD_ADDRESS && command.id !== 'version')
    throw new EsgzError('UNSUPPORTED', `CONTAINERD_ADDRESS is set; ${NO_CONTAINERD} (unset it)`);
  const tail = normalizeCommandWords(words.slice(idWords), command);
  const moved = command.flags[NAMESPACE_FLAG] ? globals.moved : [];
  return { argv: [...words.slice(0, idWords), ...moved, ...tail.argv], debug: globals.debug || tail.debug };
}

/**
 * ctr's global flags, given before the command: `--debug`, `-n/--namespace NS` (moved after the
 * command, where its flag is), `-h`. `-a/--address` asks for a containerd esgz does not use.
 */
function takeGlobalFlags(argv: readonly string[]): { rest: string[]; moved: string[]; debug: boolean } {
  const moved: string[] = [];
  let debug = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const word = argv[i]!;
    if (!word.startsWith('-') || word === '-' || word === '--') break;
    const { name, value } = splitFlagWord(word);
    if (name === 'debug') debug = value === undefined ? true : parseBool(name, value);
    else if (name === 'n' || name === 'namespace') {
      const ns = value ?? argv[++i];
      if (ns === undefined) throw new EsgzError('BAD_FLAG', `flag needs an argument: -${name}`);
      moved.push(`--${NAMESPACE_FLAG}`, ns);
    } else if (name === 'a' || name === 'address') throw new EsgzError('UNSUPPORTED', `--address: ${NO_CONTAINERD}`);
    else if (HELP_WORDS.has(word)) return { rest: ['--help'], moved: [], debug };
    else if (name === 'v' || name === 'version') return { rest: ['version'], moved: [], debug };
    else throw unknownFlag(word, ['debug', 'namespace', 'address', 'help', 'version'], 'esgz');
  }
  return { rest: argv.slice(i), moved, debug };
}

/** The command the leading words name (longest match), and how many words its id takes. */
function resolveCommand(words: string[], table: CommandTable): { command?: CommandShape; idWords: number } {
  let idWords = 0;
  while (idWords < words.length && !words[idWords]!.startsWith('-')) idWords++;
  for (let n = idWords; n > 0; n--) {
    const id = words.slice(0, n).join(':');
    const command = table.commands.find((c) => c.id === id);
    if (command) return { command, idWords: n };
    if (table.topics.includes(id)) {
      const next = words[n];
      if (next === undefined || next.startsWith('-')) return { idWords: n }; // the topic's own help
      const names = table.commands.filter((c) => c.id.startsWith(`${id}:`)).map((c) => c.id.slice(id.length + 1));
      throw unknownCommand(`${words.slice(0, n).join(' ')} ${next}`, next, names, `${words.slice(0, n).join(' ')} `);
    }
  }
  if (words[0] === undefined || words[0].startsWith('-')) return { idWords: 0 };
  const names = [...table.topics, ...table.commands.filter((c) => !c.id.includes(':')).map((c) => c.id)];
  throw unknownCommand(words[0], words[0], names, '');
}

/** The words after the command: flags spelled as oclif wants them, the rest as given. */
function normalizeCommandWords(words: string[], command: CommandShape): { argv: string[]; debug: boolean } {
  const out: string[] = [];
  let debug = false;
  let positionals = 0;
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word === '--' || (!command.strict && positionals >= command.args.length)) {
      out.push(...words.slice(i));
      break;
    }
    if (!word.startsWith('-') || word === '-') {
      out.push(word);
      positionals++;
      continue;
    }
    if (HELP_WORDS.has(word) && !hasChar(command, 'h')) {
      out.push('--help');
      continue;
    }
    const { name, value } = splitFlagWord(word);
    if (name === 'debug') {
      debug = value === undefined ? true : parseBool(name, value);
      continue;
    }
    if (name === 'a' || name === 'address') throw new EsgzError('UNSUPPORTED', `--address: ${NO_CONTAINERD}`);
    const found = findFlag(command, name, word);
    if (found === undefined) throw unknownFlag(word, flagNames(command), commandWords(command));
    out.push(...spellFlag(found, value));
    // A value flag given without `=` takes the next word whatever it looks like.
    if (found.flag.type === 'option' && value === undefined && i + 1 < words.length) out.push(words[++i]!);
  }
  return { argv: out, debug };
}

interface FoundFlag {
  flag: FlagShape;
  /** How oclif is given it: `--name` or `-c`. */
  spelling: string;
}

/**
 * A flag by any of its spellings: `--name`, `-name` (Go), an alias, or its char (`-c`, also
 * `--c` as urfave/cli accepts).
 */
function findFlag(command: CommandShape, name: string, word: string): FoundFlag | undefined {
  for (const [flagName, flag] of Object.entries(command.flags)) {
    if (flagName === name || flag.aliases?.includes(name)) {
      const spelling = word.startsWith('--') || name.length > 1 ? `--${name}` : `-${name}`;
      return { flag, spelling };
    }
    if (flag.char !== undefined && flag.char === name) return { flag, spelling: `-${name}` };
  }
  return undefined;
}

/** `--flag=true|false` for a boolean becomes the flag or nothing (every boolean defaults to false). */
function spellFlag(found: FoundFlag, value: string | undefined): string[] {
  if (value === undefined) return [found.spelling];
  if (found.flag.type === 'boolean') return parseBool(found.spelling, value) ? [found.spelling] : [];
  return [`${found.spelling}=${value}`];
}

function parseBool(flag: string, value: string): boolean {
  if (TRUE_WORDS.has(value)) return true;
  if (FALSE_WORDS.has(value)) return false;
  const name = flag.replace(/^-+/, '');
  throw new EsgzError('BAD_FLAG', `invalid boolean value "${value}" for -${name}: expected true or false`);
}

/** `--name=value`, `-name=value`, `--name`, `-n` → the name without dashes and the value after `=`. */
function splitFlagWord(word: string): { name: string; value?: string } {
  const body = word.replace(/^--?/, '');
  const eq = body.indexOf('=');
  return eq < 0 ? { name: body } : { name: body.slice(0, eq), value: body.slice(eq + 1) };
}

function hasChar(command: CommandShape, char: string): boolean {
  return Object.values(command.flags).some((f) => f.char === char);
}

function flagNames(command: CommandShape): string[] {
  return [...Object.keys(command.flags), 'help'];
}

function commandWords(command: CommandShape): string {
  return command.id.split(':').join(' ');
}

function unknownFlag(word: string, names: string[], where: string): EsgzError {
  const { name } = splitFlagWord(word);
  const guess = closest(name, names);
  const hint = guess !== undefined ? `; did you mean --${guess}?` : `; see "${where} --help"`;
  return new EsgzError('BAD_FLAG', `flag provided but not defined: ${word.split('=')[0]} (${where})${hint}`);
}

function unknownCommand(shown: string, word: string, names: string[], prefix: string): EsgzError {
  const guess = closest(word, names);
  const hint = guess !== undefined ? `; did you mean "${prefix}${guess}"?` : '; see "esgz --help"';
  return new EsgzError('BAD_FLAG', `no such command: ${shown}${hint}`);
}

/** The candidate nearest to `word` by edit distance, when near enough to be what was meant. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    // A prefix of a long name is near, but a one-letter slip nearer.
    const edits = editDistance(word, candidate);
    const distance = candidate.startsWith(word) && word.length >= 3 ? Math.min(edits, 1.5) : edits;
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The table from oclif's loaded commands (bin/run.js hands in `config.commands` and `config.topics`). */
export function commandTable(config: {
  commands: ReadonlyArray<{
    id: string;
    aliases?: string[];
    strict?: boolean;
    flags: Record<string, { type: string; char?: string; aliases?: string[] }>;
    args: Record<string, unknown>;
  }>;
  topics: ReadonlyArray<{ name: string }>;
}): CommandTable {
  // A command answers to its aliases too (`image get-toc-digest` for `get-toc-digest`).
  const named = config.commands.flatMap((c) => [c, ...(c.aliases ?? []).map((id) => ({ ...c, id }))]);
  return {
    commands: named.map((c) => ({
      id: c.id,
      strict: c.strict !== false,
      args: Object.keys(c.args),
      flags: Object.fromEntries(
        Object.entries(c.flags).map(([name, f]) => [
          name,
          {
            type: f.type === 'boolean' ? 'boolean' : 'option',
            ...(f.char ? { char: f.char } : {}),
            ...(f.aliases ? { aliases: f.aliases } : {}),
          } satisfies FlagShape,
        ]),
      ),
    })),
    topics: config.topics.map((t) => t.name),
  };
}

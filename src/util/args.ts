import { parseArgs as nodeParseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from './errors.ts';

/** Declarative description of one command-line flag. */
export interface FlagSpec {
  type: 'string' | 'number' | 'boolean' | 'list';
  description: string;
  default?: string | number | boolean;
  /** Flag may be given several times (values collected into an array). Only for 'string'. */
  repeatable?: boolean;
  /** Placeholder shown in --help, e.g. DIR. */
  metavar?: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

export interface CommandSpec<F extends FlagSpecs = FlagSpecs> {
  name: string;
  summary: string;
  usage: string;
  flags: F;
  /** Allow positional arguments (e.g. image paths for predict). */
  positionals?: { name: string; description: string };
}

/** The parsed value of one flag: numbers are numbers, lists and repeatable flags are arrays. */
type FlagValue<S extends FlagSpec> = S['type'] extends 'number'
  ? number
  : S['type'] extends 'boolean'
    ? boolean
    : S['type'] extends 'list'
      ? string[]
      : S extends { repeatable: true }
        ? string[]
        : string;

/** Flags with a default (and booleans, which default to false) are always present; the rest may be undefined. */
export type FlagValues<F extends FlagSpecs> = {
  [K in keyof F]: F[K] extends { default: string | number | boolean }
    ? FlagValue<F[K]>
    : F[K]['type'] extends 'boolean'
      ? boolean
      : FlagValue<F[K]> | undefined;
};

export interface ParsedArgs<F extends FlagSpecs = FlagSpecs> {
  flags: FlagValues<F>;
  positionals: string[];
  help: boolean;
}

export function formatHelp(spec: CommandSpec): string {
  const lines = [`${spec.name} — ${spec.summary}`, '', `Usage: ${spec.usage}`, '', 'Options:'];
  const entries = Object.entries(spec.flags).map(([name, f]) => {
    const left = f.type === 'boolean' ? `--${name}` : `--${name} ${f.metavar ?? f.type.toUpperCase()}`;
    const def = f.default !== undefined && f.default !== false ? ` (default: ${f.default})` : '';
    return [left, f.description + def] as const;
  });
  entries.push(['--help', 'show this help']);
  const width = Math.max(...entries.map(([l]) => l.length)) + 2;
  for (const [l, r] of entries) lines.push(`  ${l.padEnd(width)}${r}`);
  if (spec.positionals)
    lines.push('', `Arguments:`, `  ${spec.positionals.name.padEnd(width)}${spec.positionals.description}`);
  return lines.join('\n');
}

const splitList = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0);

/**
 * node:util's parseArgs reads `--seed -1` (or `--max-memory -3`) as a missing value; join a negative
 * number to its flag (`--seed=-1`) whenever the flag takes a value, so the flag's own check gives
 * the real message ("must be …, got '-3'") instead of "needs a value". No option is spelled like a
 * negative number, so the join cannot swallow a flag.
 */
const takesValue = (f: FlagSpec | undefined): boolean => f !== undefined && f.type !== 'boolean';

function joinNegativeNumbers(argv: readonly string[], spec: CommandSpec): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    if (a.startsWith('--') && takesValue(spec.flags[a.slice(2)]) && next !== undefined && /^-\d|^-\.\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

/** node:util parse errors → the one-line messages our CLIs have always printed. */
function parseErrorMessage(e: unknown): string {
  const err = e as { code?: string; message?: string };
  const msg = String(err.message ?? e).split('\n')[0]!;
  const opt = /'(--?[^' ]+)/.exec(msg)?.[1];
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${opt ?? msg} (see --help)`;
  if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
    return `unexpected argument ${/'([^']*)'/.exec(msg)?.[1] ?? ''} (see --help)`;
  if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && opt) {
    return /does not take/.test(msg) ? `${opt} takes no value` : `${opt} needs a value`;
  }
  return msg;
}

/**
 * Parse argv against a spec with node:util's parseArgs, then type the values: numbers checked
 * and converted, lists split on commas (repeated uses accumulate; the first use replaces the
 * default), booleans accept --no-NAME. Unknown flags and malformed values raise UserError.
 */
export function parseArgs<F extends FlagSpecs>(argv: readonly string[], spec: CommandSpec<F>): ParsedArgs<F> {
  const options: NonNullable<ParseArgsConfig['options']> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, f] of Object.entries(spec.flags)) {
    options[name] =
      f.type === 'boolean'
        ? { type: 'boolean' }
        : { type: 'string', multiple: f.type === 'list' || Boolean(f.repeatable) };
  }
  let parsed: { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] };
  try {
    parsed = nodeParseArgs({
      args: joinNegativeNumbers(argv, spec),
      options,
      allowPositionals: true,
      allowNegative: true,
      strict: true,
    });
  } catch (e) {
    throw new UserError(parseErrorMessage(e));
  }
  if (!spec.positionals && parsed.positionals.length > 0)
    throw new UserError(`unexpected argument '${parsed.positionals[0]}' (see --help)`);
  const flags: Record<string, string | number | boolean | string[] | undefined> = {};
  for (const [name, f] of Object.entries(spec.flags)) {
    const given = parsed.values[name];
    if (given === undefined) {
      flags[name] =
        f.default === undefined
          ? f.type === 'boolean'
            ? false
            : undefined
          : f.type === 'list'
            ? splitList(String(f.default))
            : f.default;
      continue;
    }
    if (f.type === 'boolean') flags[name] = Boolean(given);
    else if (f.type === 'list') flags[name] = (given as string[]).flatMap(splitList);
    else if (f.repeatable) flags[name] = given as string[];
    else if (f.type === 'number') {
      const value = String(given);
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw new UserError(`--${name} must be a number, got '${value}'`);
      flags[name] = n;
    } else flags[name] = String(given);
  }
  return { flags: flags as FlagValues<F>, positionals: parsed.positionals, help: Boolean(parsed.values.help) };
}

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

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: Record<string, FlagSpec>;
  /** Allow positional arguments (e.g. image paths for predict). */
  positionals?: { name: string; description: string };
}

export interface ParsedArgs {
  flags: Record<string, string | number | boolean | string[] | undefined>;
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
  if (spec.positionals) lines.push('', `Arguments:`, `  ${spec.positionals.name.padEnd(width)}${spec.positionals.description}`);
  return lines.join('\n');
}

/** Parse argv against a spec. Unknown flags and malformed values raise UserError (one line for the user). */
export function parseArgs(argv: readonly string[], spec: CommandSpec): ParsedArgs {
  const flags: ParsedArgs['flags'] = {};
  const positionals: string[] = [];
  let help = false;
  for (const [name, f] of Object.entries(spec.flags)) {
    if (f.default === undefined) continue;
    flags[name] = f.type === 'list' ? String(f.default).split(',').map((s) => s.trim()).filter(Boolean) : f.default;
  }
  // Repeated list/repeatable flags accumulate, but the first explicit use replaces the default.
  const given = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') { help = true; continue; }
    if (arg === '--') { positionals.push(...argv.slice(i + 1)); break; }
    if (!arg.startsWith('--')) {
      if (!spec.positionals) throw new UserError(`unexpected argument '${arg}' (see --help)`);
      positionals.push(arg);
      continue;
    }
    let name = arg.slice(2);
    let inline: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) { inline = name.slice(eq + 1); name = name.slice(0, eq); }
    let f = spec.flags[name];
    if (!f && name.startsWith('no-') && spec.flags[name.slice(3)]?.type === 'boolean') {
      flags[name.slice(3)] = false;
      continue;
    }
    if (!f) throw new UserError(`unknown option --${name} (see --help)`);
    if (f.type === 'boolean') {
      if (inline !== undefined && !/^(true|false|1|0)$/.test(inline)) throw new UserError(`--${name} takes no value`);
      flags[name] = inline === undefined ? true : inline === 'true' || inline === '1';
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined || (inline === undefined && value.startsWith('--'))) throw new UserError(`--${name} needs a value`);
    if (f.type === 'number') {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw new UserError(`--${name} must be a number, got '${value}'`);
      flags[name] = n;
    } else if (f.type === 'list') {
      const prev = flags[name];
      const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
      flags[name] = given.has(name) && Array.isArray(prev) ? [...prev, ...items] : items;
      given.add(name);
    } else if (f.repeatable) {
      const prev = flags[name];
      flags[name] = given.has(name) && Array.isArray(prev) ? [...prev, value] : [value];
      given.add(name);
    } else {
      flags[name] = value;
    }
  }
  return { flags, positionals, help };
}

/** Require an integer in [min, max]; one-line error otherwise. */
export function intInRange(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new UserError(`--${name} must be an integer from ${min} to ${max}, got '${String(v)}'`);
  }
  return v;
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from '../src/util/args.ts';
import { COMMANDS } from '../src/cli/commands.ts';
import { UserError } from '../src/util/errors.ts';
import { classWeight, seed, valFraction } from '../src/cli/validate.ts';

const ROOT = join(import.meta.dirname, '..');
const convcache = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/convcache.ts', ...args], { cwd: ROOT, encoding: 'utf8' });

const spec = {
  name: 't',
  summary: 's',
  usage: 'u',
  flags: {
    n: { type: 'number', description: '', default: 3 },
    s: { type: 'string', description: '' },
    l: { type: 'list', description: '', default: 'a,b' },
    r: { type: 'string', repeatable: true, description: '' },
    b: { type: 'boolean', description: '', default: true },
    q: { type: 'boolean', description: '' },
  },
} as const;

test('parseArgs (node:util underneath): typed values, defaults, lists, repeats, negatives, --no-', () => {
  const d = parseArgs([], spec);
  assert.deepEqual(d.flags, { n: 3, s: undefined, l: ['a', 'b'], r: undefined, b: true, q: false });
  const p = parseArgs(
    ['--n', '-2.5', '--s=x', '--l', 'c', '--l', 'd,e', '--r', '1', '--r', '2', '--no-b', '--q'],
    spec,
  );
  assert.deepEqual(p.flags, { n: -2.5, s: 'x', l: ['c', 'd', 'e'], r: ['1', '2'], b: false, q: true });
  assert.equal(parseArgs(['--s', '-3'], spec).flags.s, '-3');
  assert.deepEqual(parseArgs(['--r', '-1', '--r', '-.5'], spec).flags.r, ['-1', '-.5']);
  assert.equal(parseArgs(['-h'], spec).help, true);
  for (const [argv, msg] of [
    [['--n', 'x'], /^--n must be a number, got 'x'$/],
    [['--s'], /^--s needs a value$/],
    [['--zz'], /^unknown option --zz/],
    [['--q=1'], /^--q takes no value$/],
    [['pos'], /^unexpected argument 'pos'/],
  ] as const) {
    assert.throws(
      () => parseArgs(argv, spec),
      (e: unknown) => e instanceof UserError && msg.test(e.message),
      argv.join(' '),
    );
  }
});

test('shared validators: one limit per flag in every command', () => {
  assert.equal(seed(2 ** 32 - 1), 2 ** 32 - 1);
  assert.throws(() => seed(-1), UserError);
  assert.equal(valFraction(0), 0);
  assert.throws(() => valFraction(0, false), /\(0, 1\)/);
  assert.throws(() => valFraction(1), UserError);
  assert.equal(classWeight('balanced'), 'balanced');
  assert.throws(() => classWeight('auto'), /none, balanced/);
});

test('convcache: --help lists every command of the table; unknown command → closest match, exit 2', () => {
  const help = convcache('--help');
  assert.equal(help.status, 0);
  for (const c of COMMANDS) assert.match(help.stdout, new RegExp(`^  ${c.name} +\\S`, 'm'));
  const bad = convcache('comapre');
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
  assert.match(bad.stderr, /did you mean 'compare'/);
  const sub = convcache('train-head', '--help');
  assert.equal(sub.status, 0);
  assert.match(sub.stdout, /^train-head — .*\n\nUsage: convcache train-head/);
  const flag = convcache('compare', '--cv');
  assert.equal(flag.status, 2);
  assert.equal(flag.stderr, 'compare: error: --cv needs a value\n');
  // A negative value of a string-typed flag is a bad value, not a missing one.
  const mem = convcache('compare', '--max-memory', '-3');
  assert.equal(mem.status, 2);
  assert.equal(mem.stderr, "compare: error: --max-memory must look like 8G, 512M or a byte count, got '-3'\n");
});

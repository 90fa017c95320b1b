#!/usr/bin/env node
import '../util/threadpool.ts'; // first: sizes libuv's pool (image decodes) before any I/O
import '../util/ort-telemetry.ts'; // before ONNX Runtime loads: no telemetry files or uploads
import { COMMANDS } from './commands.ts';
import { toolVersion } from '../util/version.ts';

/** `convcache <command> [options]`: find the command in the table, load its module, hand it the rest of argv. */

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

function usage(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'convcache — transfer learning with pretrained convnets: extract conv-base features once, train and compare heads',
    '',
    'Usage: convcache <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}${c.summary}`),
    '',
    "convcache <command> --help shows a command's options. Caches go to ./convcache-data (--cache-root DIR or CONVCACHE_HOME);",
    'downloaded models to ~/.cache/convcache/models ($XDG_CACHE_HOME); CONVCACHE_MIRROR=DIR[:DIR] is an offline models/datasets mirror.',
  ].join('\n');
}

const argv = process.argv.slice(2);
// `convcache help extract` = `convcache extract --help`.
const [name, ...rest] = argv[0] === 'help' && argv[1] !== undefined ? [argv[1], '--help'] : argv;
if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
  process.stdout.write(usage() + '\n');
  if (name === undefined) process.exitCode = 2;
} else if (name === '--version' || name === '-v') {
  process.stdout.write(toolVersion() + '\n');
} else {
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) {
    const closest = [...COMMANDS].sort((a, b) => editDistance(name, a.name) - editDistance(name, b.name))[0]!;
    process.stderr.write(
      `convcache: unknown command '${name}'; did you mean '${closest.name}'? (convcache --help lists them)\n`,
    );
    process.exitCode = 2;
  } else {
    const { command } = await entry.load();
    await command.run(rest);
  }
}

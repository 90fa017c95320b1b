import type { Command } from './command.ts';

/**
 * The `convcache` command table. Each entry loads its module only when run, so `convcache --help`
 * never pays for ONNX Runtime, sharp or TF.js. A new command = one file exporting `command` + one line here.
 */
export interface CommandEntry {
  name: string;
  /** One line for `convcache --help`; the module's spec has the long form. */
  summary: string;
  load: () => Promise<{ command: Command }>;
}

export const COMMANDS: readonly CommandEntry[] = [
  {
    name: 'start',
    summary: 'the main job: extract features (cached), then compare every head and write the report',
    load: () => import('./main.ts'),
  },
  {
    name: 'extract',
    summary: 'run the frozen conv base over a dataset once and cache the features (Arrow + .npy)',
    load: () => import('./extract.ts'),
  },
  {
    name: 'layers',
    summary: "list a model's layers and output shapes, to choose where to cut (--layer)",
    load: () => import('./layers.ts'),
  },
  {
    name: 'train-head',
    summary: 'train one classifier head on a feature cache and save it',
    load: () => import('./train-head.ts'),
  },
  {
    name: 'compare',
    summary: 'train every head on one split of a cache and write report.{json,md,html}',
    load: () => import('./compare.ts'),
  },
  {
    name: 'predict',
    summary: 'classify images with a trained head (or a fine-tuned model)',
    load: () => import('./predict.ts'),
  },
  {
    name: 'finetune',
    summary: 'dense head on the frozen base with augmentation, then fine-tune the top blocks',
    load: () => import('./finetune.ts'),
  },
  {
    name: 'merge',
    summary: "after a sharded extract (--shard K/N), write the cache files from every shard's records",
    load: () => import('./merge.ts'),
  },
  {
    name: 'bench',
    summary: 'measure speed and memory (extract, heads, finetune, finetune-step, startup)',
    load: () => import('./bench.ts'),
  },
];

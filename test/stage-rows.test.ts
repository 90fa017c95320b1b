import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { finetuneRows, bestByValidation } from '../src/pipeline/stage-rows.ts';
import type { FeatureCache } from '../src/store/read.ts';
import type { ReportRow } from '../src/eval/report.ts';
import { silentLogger } from '../src/util/log.ts';
import { removeDir, tempDir } from './helpers.ts';

const manifest = {
  dataRoot: '/data/cvd',
  classes: ['cats', 'dogs'],
  counts: { test: { total: 10 } },
  backbone: { weightsHash: 'abc' },
};
const cache = { manifest } as unknown as FeatureCache;

function finetuneJson(over: Record<string, unknown> = {}) {
  const phase = { epochsRun: 2, seconds: 10, ortSeconds: 4, tfjsSeconds: 5, bestValAccuracy: 0.9, testAccuracy: 0.8 };
  return {
    model: { id: 'm', weightsHash: 'abc' },
    classes: ['cats', 'dogs'],
    data: { root: '/data/cvd', counts: { test: 10 } },
    network: { unfreeze: 2, trainableLayers: ['a', 'b'] },
    options: { augment: 'flip' },
    valAccuracy: 0.95,
    testAccuracy: 0.9,
    totalSeconds: 30,
    ortSeconds: 10,
    tfjsSeconds: 15,
    prepare: { seconds: 5, ortSeconds: 2 },
    phases: { head: phase, finetune: phase },
    ...over,
  };
}

test('finetune results on the same data and test split become report rows; others are ignored', () => {
  const root = tempDir('stagerows');
  try {
    for (const [d, body] of [
      ['run-a', finetuneJson()],
      ['run-b', finetuneJson({ testAccuracy: 0.7 })],
      [
        'run-c',
        finetuneJson({ selection: { mode: 'refit', validationRun: { dir: '/x/run-c/validation', seconds: 12 } } }),
      ],
      ['other', finetuneJson({ data: { root: '/elsewhere', counts: { test: 10 } } })],
    ] as const) {
      mkdirSync(join(root, d));
      writeFileSync(join(root, d, 'finetune.json'), JSON.stringify(body));
    }
    const rows = finetuneRows(cache, silentLogger, root);
    assert.deepEqual(
      rows.map((r) => r.name),
      [
        'frozen base + head (aug) [run-a]',
        'fine-tuned top 2 [run-a]',
        'frozen base + head (aug) [run-b]',
        'fine-tuned top 2 [run-b]',
        'frozen base + head (aug) [run-c]',
        'fine-tuned top 2 [run-c]',
      ],
    );
    assert.equal(rows[0]!.testAccuracy, 0.8);
    assert.equal(rows[0]!.fitSeconds, 15, 'phase 1 wall time = preparation + head phase');
    assert.equal(rows[3]!.testAccuracy, 0.7);
    assert.equal(rows[1]!.fitSeconds, 30);
    // --select: the validation run that chose the refit's epochs is part of the fine-tuned model's cost.
    assert.equal(rows[5]!.fitSeconds, 30 + 12);
    assert.match(rows[5]!.note ?? '', /plus 12 s for the validation run/);
    assert.doesNotMatch(rows[1]!.note ?? '', /validation run/);
  } finally {
    removeDir(root);
  }
});

test('the head retrained on augmented caches is chosen by validation, ties by a fixed order, never by test', () => {
  const row = (name: string, val: number, testAcc: number) =>
    ({ name, source: 'compare', valAccuracy: val, testAccuracy: testAcc }) as ReportRow;
  assert.equal(bestByValidation([row('knn', 0.98, 0.99), row('svm', 0.98, 0.9), row('rf', 0.97, 1)])!.name, 'svm');
  assert.equal(bestByValidation([row('knn', 0.99, 0.5), row('svm', 0.98, 0.99)])!.name, 'knn');
});

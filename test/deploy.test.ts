import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { resolveShard } from '../src/pipeline/shard.ts';

/** No cluster here: parse the deploy files and check what an Indexed Job / a job array needs. */
const DEPLOY = new URL('../deploy/', import.meta.url).pathname;
const PKG = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  scripts: Record<string, string>;
};

function yamlDocs(file: string): any[] {
  const docs = parseAllDocuments(readFileSync(join(DEPLOY, 'kubernetes', file), 'utf8'));
  for (const d of docs) assert.equal(d.errors.length, 0, `${file}: ${d.errors.join('; ')}`);
  return docs.map((d) => d.toJS());
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

test('kubernetes: Indexed Job (completions = --shards, 2-core requests, shared RWX volume) and a merge Job on the same --out', () => {
  const [pvc] = yamlDocs('pvc.yaml');
  assert.equal(pvc.kind, 'PersistentVolumeClaim');
  assert.deepEqual(pvc.spec.accessModes, ['ReadWriteMany'], 'every pod mounts it read-write');

  const [job] = yamlDocs('extract-job.yaml');
  assert.equal(job.apiVersion, 'batch/v1');
  assert.equal(job.kind, 'Job');
  assert.equal(job.spec.completionMode, 'Indexed', 'pods get JOB_COMPLETION_INDEX');
  const N = job.spec.completions;
  assert.ok(Number.isInteger(N) && N >= 2);
  assert.ok(Number.isInteger(job.spec.parallelism) && job.spec.parallelism >= 1 && job.spec.parallelism <= N);
  const pod = job.spec.template.spec;
  assert.ok(
    ['Never', 'OnFailure'].includes(pod.restartPolicy),
    'a Job pod template needs restartPolicy Never or OnFailure',
  );
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0];
  const argv: string[] = [...c.command, ...c.args];
  assert.ok(argv.includes('extract'));
  assert.ok('extract' in PKG.scripts && 'merge' in PKG.scripts, 'the commands the manifests run exist');
  assert.equal(Number(flag(argv, '--shards')), N, '--shards equals completions');
  assert.equal(flag(argv, '--shard'), undefined, 'the index comes from JOB_COMPLETION_INDEX');
  for (const k of [0, N - 1])
    assert.deepEqual(resolveShard({ shards: N }, { JOB_COMPLETION_INDEX: String(k) }), { index: k, count: N });
  assert.equal(String(c.resources.requests.cpu), '2');
  assert.equal(flag(argv, '--threads'), '2');
  const out = flag(argv, '--out')!;
  const mount = c.volumeMounts.find((m: { mountPath: string }) => out.startsWith(m.mountPath + '/'));
  assert.ok(mount, '--out lies on a mounted volume');
  assert.ok(flag(argv, '--data')!.startsWith(mount.mountPath + '/'), '--data on the shared volume too');
  const vol = pod.volumes.find((v: { name: string }) => v.name === mount.name);
  assert.equal(vol.persistentVolumeClaim.claimName, pvc.metadata.name);

  const [merge] = yamlDocs('merge-job.yaml');
  assert.equal(merge.kind, 'Job');
  assert.equal(merge.spec.completionMode, undefined);
  const mc = merge.spec.template.spec.containers[0];
  const margv: string[] = [...mc.command, ...mc.args];
  assert.ok(margv.includes('merge'));
  assert.equal(flag(margv, '--out'), out, 'merge reads the folder the shards wrote');
  assert.equal(merge.spec.template.spec.volumes[0].persistentVolumeClaim.claimName, pvc.metadata.name);
  assert.equal(merge.spec.template.spec.restartPolicy, 'Never');
});

test('slurm: job array with 2 CPUs per task, shard count from the array, merge chained with afterok', () => {
  const text = readFileSync(join(DEPLOY, 'slurm', 'extract-array.sbatch'), 'utf8');
  const sbatch = (t: string) =>
    Object.fromEntries([...t.matchAll(/^#SBATCH --([\w-]+)(?:=(\S+))?/gm)].map((m) => [m[1]!, m[2] ?? true]));
  const opts = sbatch(text);
  const m = /^(\d+)-(\d+)$/.exec(String(opts.array));
  assert.ok(m, `--array=A-B, got ${opts.array}`);
  const count = Number(m![2]) - Number(m![1]) + 1;
  assert.ok(count >= 2);
  assert.equal(opts['cpus-per-task'], '2');
  assert.match(text, /npm run extract -- /);
  assert.doesNotMatch(text, /--shards?\b/, 'the shard comes from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT');
  assert.deepEqual(
    resolveShard(
      {},
      { SLURM_ARRAY_TASK_ID: m![2]!, SLURM_ARRAY_TASK_COUNT: String(count), SLURM_ARRAY_TASK_MIN: m![1]! },
    ),
    { index: count - 1, count },
  );
  const merge = readFileSync(join(DEPLOY, 'slurm', 'merge.sbatch'), 'utf8');
  assert.match(merge, /npm run merge -- --out "\$OUT"/);
  assert.match(text, /--out "\$OUT"/);
  const submit = readFileSync(join(DEPLOY, 'slurm', 'submit.sh'), 'utf8');
  assert.match(submit, /sbatch --parsable[^\n]*extract-array\.sbatch/);
  assert.match(submit, /--dependency=afterok:"\$array"[^\n]*merge\.sbatch/);
  for (const f of ['slurm/extract-array.sbatch', 'slurm/merge.sbatch', 'slurm/submit.sh', 'kubernetes/run.sh']) {
    const r = spawnSync('bash', ['-n', join(DEPLOY, f)], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${f}: ${r.stderr}`);
  }
});

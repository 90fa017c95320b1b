import { createHead, loadHead, HEAD_KINDS } from './src/heads/registry.ts';
import { Rng } from './src/linalg/random.ts';
function blobs(n: number, d: number, K: number, seed: number, sep = 3) {
  const rng = new Rng(seed); const centers = Array.from({length: K}, () => Float32Array.from({length: d}, () => rng.normal() * sep / Math.sqrt(d) * 2));
  const X = new Float32Array(n*d), y = new Int32Array(n);
  for (let i=0;i<n;i++){ const c = i % K; y[i]=c; for (let j=0;j<d;j++) X[i*d+j] = centers[c]![j]! + rng.normal(); }
  return { X: {data: X, rows: n, cols: d}, y };
}
const n = Number(process.env.N ?? 2000), d = Number(process.env.D ?? 768), K = Number(process.env.K ?? 2);
const tr = blobs(n, d, K, 1, 1.0), te = blobs(1000, d, K, 1, 1.0);
// same centers? blobs uses seed for centers: use the same seed but different noise -> regenerate test with different noise
const te2 = (() => { const b = blobs(n + 1000, d, K, 1, 1.0); return { X: { data: b.X.data.slice(n*d), rows: 1000, cols: d }, y: b.y.slice(n) }; })();
const trn = (() => { const b = blobs(n + 1000, d, K, 1, 1.0); return { X: { data: b.X.data.slice(0, n*d), rows: n, cols: d }, y: b.y.slice(0, n) }; })();
for (const kind of (process.env.HEADS?.split(',') ?? HEAD_KINDS)) {
  const extra = kind === 'dense' ? { epochs: 5 } : kind === 'svm' && process.env.LIN ? { kernel: 'linear' } : {};
  const h = createHead(kind, extra);
  let t = performance.now(); await h.fit(trn.X, trn.y, { nClasses: K, seed: 1 }); const fitMs = performance.now() - t;
  t = performance.now(); const p = await h.predict(te2.X); const predMs = performance.now() - t;
  let acc = 0; for (let i=0;i<p.length;i++) acc += +(p[i]===te2.y[i]);
  await h.save(`/tmp/hx/${kind}.head`); const h2 = await loadHead(`/tmp/hx/${kind}.head`);
  const p2 = await h2.predict(te2.X); let same = p2.every((v, i) => v === p[i]);
  console.log(kind, 'fit', fitMs.toFixed(0), 'ms predict', predMs.toFixed(0), 'acc', (acc/p.length).toFixed(3), 'reload-same', same);
}

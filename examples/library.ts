// Used verbatim by README "Use from TypeScript" and type-checked/run by test/package.test.ts.
import { createHead, extractFeatures, openFeatureCache } from 'convcache';

// Extract once (cached: a re-run only computes images it has not seen), then train a head on the arrays.
const { cacheDir, manifest } = await extractFeatures({ data: './photos' });
const cache = openFeatureCache(cacheDir);
const train = cache.splits.train!;
const test = cache.splits.test!;
const head = createHead('logreg');
await head.fit(train.X, train.y, { nClasses: cache.classes.length, seed: 42 });
const predicted = await head.predict(test.X);
const correct = predicted.filter((label, i) => label === test.y[i]).length;
console.log(JSON.stringify({ model: manifest.backbone.modelId, classes: cache.classes, test: test.y.length, accuracy: correct / test.y.length }));

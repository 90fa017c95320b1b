import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, join, relative } from 'node:path';
import ts from 'typescript';
import { makeSubset, removeDir, sharedDir, tempDir } from './helpers.ts';

/**
 * The package as a user gets it: `npm pack`, install the tarball into an empty folder offline
 * (from the npm cache `npm ci` filled), then use it there — the `convcache` bin through npx and
 * the library through its package name, under plain node, with nothing of the repo on any path.
 * Everything it writes must land in that folder.
 */

const ROOT = join(import.meta.dirname, '..');

/** Every file below dir with size and mtime, to prove a folder was not written to. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const s = statSync(p);
        out.set(relative(dir, p), `${s.size}:${s.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out;
}

/**
 * A lockfile for the user's project: the tarball plus convcache's runtime dependencies exactly as
 * the repo's lockfile resolves them (same hoisted paths), so `npm install --offline` needs only
 * tarballs already in the npm cache, not registry metadata (which `npm ci` does not cache).
 */
function userLockfile(tgz: string): object {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>;
  };
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
    version: string;
    dependencies: object;
    bin: object;
    engines: object;
  };
  const packages: Record<string, object> = {
    '': { name: 'user-project', dependencies: { convcache: tgz } },
    'node_modules/convcache': {
      version: pkg.version,
      resolved: tgz,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [k, v] of Object.entries(lock.packages)) if (k.startsWith('node_modules/') && !v.dev) packages[k] = v;
  return { name: 'user-project', lockfileVersion: 3, requires: true, packages };
}

test(
  'npm pack → offline install into an empty folder → convcache CLI and library work there and write only there',
  { timeout: 600_000 },
  () => {
    const tmp = tempDir('package');
    const repoDataBefore = snapshot(join(ROOT, 'data'));
    try {
      const run = (cmd: string, args: string[], opts: SpawnSyncOptions): { stdout: string; stderr: string } => {
        const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
        assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stderr}`);
        return { stdout: String(r.stdout), stderr: String(r.stderr) };
      };

      // 1. Pack and install offline into the user's empty project. `prepare` (the build) already ran in
      //    `npm ci`; rebuild only when a source file is newer than dist/, then pack without re-running it.
      const built = join(ROOT, 'dist', 'index.js');
      const newest = Math.max(
        ...[...snapshot(join(ROOT, 'src')).keys()].map((f) => statSync(join(ROOT, 'src', f)).mtimeMs),
        statSync(join(ROOT, 'package.json')).mtimeMs,
      );
      if (!existsSync(built) || statSync(built).mtimeMs < newest)
        run('npm', ['run', 'build', '--silent'], { cwd: ROOT });
      const packed = run('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', tmp], { cwd: ROOT });
      const tgzName = packed.stdout.trim().split('\n').pop()!;
      const proj = join(tmp, 'project');
      mkdirSync(proj);
      const tgz = `file:../${tgzName}`;
      writeFileSync(
        join(proj, 'package.json'),
        JSON.stringify(
          {
            name: 'user-project',
            private: true,
            type: 'module',
            dependencies: { convcache: tgz },
            // What an offline user sets: no CUDA download by onnxruntime-node's postinstall (npm 11 with allowScripts, e.g. 11.19; older npm: the env var below).
            allowScripts: { 'onnxruntime-node': false, 'core-js': false },
          },
          null,
          2,
        ),
      );
      writeFileSync(join(proj, 'package-lock.json'), JSON.stringify(userLockfile(tgz), null, 2));
      // No repo paths: drop PATH entries inside the repo (npm test puts node_modules/.bin there), no NODE_PATH.
      const PATH = (process.env.PATH ?? '')
        .split(delimiter)
        .filter((p) => p && !p.startsWith(ROOT))
        .join(delimiter);
      const baseEnv = { PATH, HOME: process.env.HOME, ONNXRUNTIME_NODE_INSTALL: 'skip', LANG: 'C' };
      // The npm cache `npm ci` filled (npm passes its location down when this runs under `npm test`).
      const npmCache = process.env.npm_config_cache ? { npm_config_cache: process.env.npm_config_cache } : {};
      run('npm', ['install', '--offline', '--no-audit', '--no-fund'], {
        cwd: proj,
        env: { ...baseEnv, ...npmCache } as NodeJS.ProcessEnv,
      });
      const pkgDir = join(proj, 'node_modules', 'convcache');
      assert.ok(existsSync(join(pkgDir, 'dist', 'index.d.ts')), 'the tarball ships dist/ with types');
      assert.ok(
        !existsSync(join(proj, 'node_modules', 'tsx')) && !existsSync(join(proj, 'node_modules', 'ml-svm')),
        'dev-only packages are not installed',
      );
      const pkgBefore = snapshot(pkgDir);

      // 2. The user's photos and environment: models come from the mirror, the user cache is inside tmp.
      makeSubset(join(proj, 'photos'), { train: 12, test: 6 });
      const env = {
        ...baseEnv,
        HOME: join(tmp, 'home'),
        XDG_CACHE_HOME: join(tmp, 'xdg-cache'),
        CONVCACHE_MIRROR: sharedDir(),
      } as NodeJS.ProcessEnv;
      const npx = (...args: string[]): { stdout: string; stderr: string } =>
        run('npx', ['--no-install', 'convcache', ...args], { cwd: proj, env });

      const help = npx('--help').stdout;
      for (const c of ['extract', 'layers', 'train-head', 'compare', 'predict', 'finetune', 'bench'])
        assert.match(help, new RegExp(`^  ${c} `, 'm'));
      const unknown = spawnSync('npx', ['--no-install', 'convcache', 'extrat'], { cwd: proj, env, encoding: 'utf8' });
      assert.equal(unknown.status, 2);
      assert.match(unknown.stderr, /did you mean 'extract'/);

      const cacheDir = npx('extract', '--data', 'photos', '--quiet').stdout.trim();
      assert.ok(
        cacheDir.startsWith(join(proj, 'convcache-data', 'cache')),
        `cache in the working directory, got ${cacheDir}`,
      );
      assert.ok(existsSync(join(cacheDir, 'manifest.json')));
      assert.ok(
        existsSync(join(tmp, 'xdg-cache', 'convcache', 'models', 'onnx')),
        'converted models go to $XDG_CACHE_HOME/convcache/models',
      );

      const compared = npx('compare', '--heads', 'logreg,knn', '--quiet').stdout;
      assert.ok(existsSync(join(cacheDir, 'report', 'report.json')), compared);
      const predicted = npx('predict', join('photos', 'test', 'cats'), join('photos', 'test', 'dogs'))
        .stdout.trim()
        .split('\n');
      assert.equal(predicted[0], 'path,label,probability');
      assert.equal(predicted.length, 1 + 12);
      const right = predicted.slice(1).filter((l) => l.split(',')[0]!.includes(`${l.split(',')[1]}`)).length;
      assert.ok(right >= 9, `predict should get most of 12 cats/dogs right, got ${right}:\n${predicted.join('\n')}`);

      // 3. The library, through the package name: the README example, type-checked against the shipped
      //    .d.ts (tsc from the repo; only @types/node comes from there), then run as .mjs under plain node.
      const example = readFileSync(join(ROOT, 'examples', 'library.ts'), 'utf8');
      writeFileSync(join(proj, 'example.ts'), example);
      writeFileSync(
        join(proj, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'ES2022',
            module: 'NodeNext',
            moduleResolution: 'NodeNext',
            strict: true,
            noEmit: true,
            skipLibCheck: true,
            types: ['node'],
            typeRoots: [join(ROOT, 'node_modules', '@types')],
          },
          files: ['example.ts'],
        }),
      );
      run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', proj], { cwd: proj, env });
      writeFileSync(
        join(proj, 'example.mjs'),
        ts.transpileModule(example, {
          compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
        }).outputText,
      );
      const libRun = run(process.execPath, ['example.mjs'], { cwd: proj, env });
      assert.equal(libRun.stderr, '', 'library functions print nothing on their own (no logger given)');
      const lib = JSON.parse(libRun.stdout.trim()) as { classes: string[]; test: number; accuracy: number };
      assert.deepEqual(lib.classes, ['cats', 'dogs']);
      assert.equal(lib.test, 12);
      assert.ok(lib.accuracy >= 0.75, `logreg on cached features: ${lib.accuracy}`);

      // 4. Nothing written into the package's own folder, nor into the repo's data/.
      assert.deepEqual(
        [...snapshot(pkgDir).keys()].filter((k) => pkgBefore.get(k) === undefined),
        [],
      );
      assert.deepEqual(snapshot(pkgDir), pkgBefore);
      assert.deepEqual(snapshot(join(ROOT, 'data')), repoDataBefore);
      // ONNX Runtime's own telemetry (a database under $XDG_CACHE_HOME/Microsoft, uploads) stays off (src/util/ort-telemetry.ts).
      for (const dir of [join(tmp, 'xdg-cache', 'Microsoft'), join(tmp, 'home', '.cache', 'Microsoft')])
        assert.ok(!existsSync(dir), `no ONNX Runtime telemetry files: ${dir}`);
      assert.ok(
        !existsSync(join(ROOT, 'convcache-data', 'cache', relative(join(proj, 'convcache-data', 'cache'), cacheDir))),
      );
    } finally {
      removeDir(tmp);
    }
  },
);

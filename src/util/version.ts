import { createRequire } from 'node:module';

/** convcache's version (package.json), recorded in manifests, saved heads and reports. */
export function toolVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

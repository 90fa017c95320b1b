/**
 * onnxruntime-node's native library (1.30 here) starts a telemetry system on Linux and macOS that
 * writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db and /tmp/mat-debug-<pid>.log
 * and tries HTTPS uploads: files outside the user's folders and network use that a tool installed
 * into someone's project must not bring (checked: `npx convcache extract` from a packed install wrote
 * both; with ORT_DISABLE_TELEMETRY set, neither). The CLI, the library entry, the bench's child and
 * `npm test` (`--import`: the tests load ORT directly)
 * import this module before anything loads ONNX Runtime. An explicit value in the environment wins.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

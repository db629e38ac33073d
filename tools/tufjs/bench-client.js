#!/usr/bin/env node
'use strict';
// The tuf-js baseline for bench/tuf_refresh.sh. Measures, N times:
//   cold: a fresh metadata directory holding only the trusted root, refresh() + getTargetInfo()
//   warm: the same directory, a new Updater, refresh() + getTargetInfo()
// and prints {"cold_ms_median", "warm_ms_median", "iterations"} as one JSON line.
//   node bench-client.js --metadata-url URL --target-base-url URL --root FILE --target PATH
//                        [--iterations N]   (N <= 50)

const fs = require('fs');
const os = require('os');
const path = require('path');
const { Updater } = require('tuf-js');

function arg(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function once(dir, targetDir) {
  const updater = new Updater({
    metadataDir: dir, targetDir, metadataBaseUrl: arg('--metadata-url'),
    targetBaseUrl: arg('--target-base-url'), config: { fetchRetries: 0 },
  });
  await updater.refresh();
  if (!(await updater.getTargetInfo(arg('--target')))) throw new Error('target not found');
}

async function main() {
  const iterations = Math.min(Number(arg('--iterations') || 10), 50);
  const root = fs.readFileSync(arg('--root'));
  const cold = [];
  const warm = [];
  for (let i = 0; i < iterations; i += 1) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upkeep-bench-tufjs-'));
    try {
      fs.writeFileSync(path.join(dir, 'root.json'), root);
      const t0 = process.hrtime.bigint();
      await once(dir, dir);
      const t1 = process.hrtime.bigint();
      await once(dir, dir);
      const t2 = process.hrtime.bigint();
      cold.push(Number(t1 - t0) / 1e6);
      warm.push(Number(t2 - t1) / 1e6);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(JSON.stringify({ cold_ms_median: median(cold), warm_ms_median: median(warm), iterations }));
}

main().catch((e) => { console.error(e.message); process.exit(1); });

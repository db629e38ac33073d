#!/usr/bin/env node
'use strict';
// The tuf-js baseline for bench/tuf_refresh.sh. Measures, N times:
//   cold: a fresh metadata directory holding only the trusted root; a new Updater, refresh() +
//         getTargetInfo(target)
//   warm: the same metadata directory afterwards; a new Updater, refresh() + getTargetInfo(target)
// and prints {"cold_ms_median": ..., "warm_ms_median": ..., "iterations": N} as one JSON line
// (medians in milliseconds; the upper median for even N, like bench/tuf_refresh.cpp).
//   node bench-client.js --metadata-url URL --target-base-url URL --root FILE --target PATH
//                        [--iterations N]   (1 <= N <= 50, default 10)

const fs = require('fs');
const os = require('os');
const path = require('path');
const { Updater } = require('tuf-js');

const USAGE = 'usage: bench-client.js --metadata-url URL --target-base-url URL --root FILE --target PATH [--iterations N]';

function parseArgs(argv) {
  const known = ['--metadata-url', '--target-base-url', '--root', '--target', '--iterations'];
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!known.includes(argv[i]) || argv[i + 1] === undefined) {
      console.error(`bench-client.js: unexpected argument ${argv[i]}\n${USAGE}`);
      process.exit(2);
    }
    out[argv[i]] = argv[i + 1];
  }
  for (const k of known.slice(0, 4)) {
    if (!out[k]) {
      console.error(`bench-client.js: ${k} is required\n${USAGE}`);
      process.exit(2);
    }
  }
  const n = Number(out['--iterations'] === undefined ? 10 : out['--iterations']);
  if (!Number.isInteger(n) || n < 1 || n > 50) {
    console.error(`bench-client.js: --iterations must be an integer from 1 to 50\n${USAGE}`);
    process.exit(2);
  }
  out['--iterations'] = n;
  return out;
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function once(args, metadataDir, targetDir) {
  const updater = new Updater({
    metadataDir, targetDir, metadataBaseUrl: args['--metadata-url'],
    targetBaseUrl: args['--target-base-url'], config: { fetchRetries: 0 },
  });
  await updater.refresh();
  if (!(await updater.getTargetInfo(args['--target']))) throw new Error(`target ${args['--target']} not found`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const iterations = args['--iterations'];
  const root = fs.readFileSync(args['--root']);
  const cold = [];
  const warm = [];
  for (let i = 0; i < iterations; i += 1) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upkeep-bench-tufjs-'));
    try {
      const metadataDir = path.join(dir, 'metadata');
      const targetDir = path.join(dir, 'targets');
      fs.mkdirSync(metadataDir);
      fs.mkdirSync(targetDir);
      fs.writeFileSync(path.join(metadataDir, 'root.json'), root);
      const t0 = process.hrtime.bigint();
      await once(args, metadataDir, targetDir);
      const t1 = process.hrtime.bigint();
      await once(args, metadataDir, targetDir);
      const t2 = process.hrtime.bigint();
      cold.push(Number(t1 - t0) / 1e6);
      warm.push(Number(t2 - t1) / 1e6);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const ms = (x) => Math.round(x * 1000) / 1000;
  console.log(JSON.stringify({ cold_ms_median: ms(median(cold)), warm_ms_median: ms(median(warm)), iterations }));
}

main().catch((e) => {
  console.error(`bench-client.js: ${e.message}`);
  process.exit(1);
});

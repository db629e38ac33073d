#!/usr/bin/env node
'use strict';
// Downloads one target with the tuf-js client, for tests that check that an independent client
// accepts what upkeep publishes. Exit 0 when the target verified, 1 otherwise.
//   node client-download.js METADATA_URL TARGETS_URL ROOT_JSON TARGET_PATH

const fs = require('fs');
const os = require('os');
const path = require('path');
const { Updater } = require('tuf-js');

async function main() {
  const [metadataUrl, targetsUrl, rootFile, target] = process.argv.slice(2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upkeep-tufjs-client-'));
  try {
    fs.mkdirSync(path.join(dir, 'metadata'));
    fs.mkdirSync(path.join(dir, 'targets'));
    fs.copyFileSync(rootFile, path.join(dir, 'metadata', 'root.json'));
    const updater = new Updater({
      metadataDir: path.join(dir, 'metadata'), targetDir: path.join(dir, 'targets'),
      metadataBaseUrl: metadataUrl, targetBaseUrl: targetsUrl, config: { fetchRetries: 0 },
    });
    await updater.refresh();
    const info = await updater.getTargetInfo(target);
    if (!info) throw new Error(`${target} not found`);
    await updater.downloadTarget(info);
    console.log(`tuf-js verified ${target} (${info.length} bytes)`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(`tuf-js: ${e.message}`); process.exit(1); });

#!/usr/bin/env node
'use strict';
// Generates the benchmark repository for bench/tuf_refresh.sh: a consistent-snapshot repository
// with N targets spread over R delegated roles ("roleNN/*"), plus a few top-level targets.
//   node gen-bench-repo.js OUTDIR [--targets 1000] [--roles 16]
// Writes OUTDIR/{initial_root.json,metadata/,targets/} and OUTDIR/bench.json
// ({"lookup_target": a path in the last delegated role}).

const fs = require('fs');
const path = require('path');
const { Repo, newKey, DelegatedRole, Delegations } = require('./lib');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const outDir = process.argv[2];
if (!outDir || outDir.startsWith('-')) {
  console.error('usage: gen-bench-repo.js OUTDIR [--targets N] [--roles R]');
  process.exit(2);
}
const targets = arg('--targets', 1000);
const roles = arg('--roles', 16);

const repo = new Repo({ metaHashes: true });
for (const role of ['root', 'timestamp', 'snapshot', 'targets']) repo.addRootKey(role);
for (let i = 0; i < 3; i += 1) repo.addTarget('targets', `top-${i}.bin`, `top-level ${i}\n`);

const names = Array.from({ length: roles }, (_, i) => `role${String(i).padStart(2, '0')}`);
const keys = names.map(() => newKey('ed25519'));
repo.delegations.targets = () => new Delegations({
  keys: Object.fromEntries(keys.map((k) => [k.key.keyID, k.key])),
  roles: Object.fromEntries(names.map((name, i) => [name, new DelegatedRole({
    name, keyIDs: [keys[i].key.keyID], threshold: 1, terminating: true, paths: [`${name}/*`],
  })])),
});
names.forEach((name, i) => {
  repo.delegatedRoles.push(name);
  repo.signers[name] = [keys[i]];
  repo.targets[name] = {};
});
let lookup = '';
for (let t = 0; t < targets; t += 1) {
  const role = names[t % roles];
  const p = `${role}/file-${String(t).padStart(4, '0')}.bin`;
  repo.addTarget(role, p, `payload ${t} `.repeat(20));
  if (role === names[roles - 1]) lookup = p;
}
repo.write(outDir);
fs.writeFileSync(path.join(outDir, 'bench.json'), JSON.stringify({ lookup_target: lookup }) + '\n');
console.log(`wrote ${targets} targets in ${roles} delegated roles to ${outDir}`);

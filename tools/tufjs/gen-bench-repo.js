#!/usr/bin/env node
'use strict';
// Generates the benchmark repository for bench/tuf_refresh.sh: a consistent-snapshot repository
// with N targets spread round-robin over R delegated roles ("roleNN", paths ["roleNN/*"], targets
// "roleNN/file-MMMM.bin" of a few hundred bytes), plus a few top-level targets.
//   node gen-bench-repo.js OUTDIR [--targets 1000] [--roles 16]
// Writes OUTDIR/initial_root.json, OUTDIR/metadata/, OUTDIR/targets/ (the fixture layout, see
// gen-fixtures.js) and OUTDIR/bench.json: {"lookup_target": "<a path in the last delegated role>"}.

const fs = require('fs');
const path = require('path');
const { Repo, newKey, DelegatedRole, Delegations } = require('./lib');

function usage(message) {
  if (message) console.error(`gen-bench-repo.js: ${message}`);
  console.error('usage: gen-bench-repo.js OUTDIR [--targets N] [--roles R]   (1 <= R <= N)');
  process.exit(2);
}

const args = process.argv.slice(2);
const options = { '--targets': 1000, '--roles': 16 };
let outDir;
for (let i = 0; i < args.length; i += 1) {
  if (args[i] in options) {
    const n = Number(args[i + 1]);
    if (!Number.isSafeInteger(n) || n < 1) usage(`${args[i]} needs a positive integer`);
    options[args[i]] = n;
    i += 1;
  } else if (!args[i].startsWith('-') && outDir === undefined) {
    outDir = args[i];
  } else {
    usage(`unexpected argument ${args[i]}`);
  }
}
if (outDir === undefined) usage();
const targets = options['--targets'];
const roles = options['--roles'];
if (roles > targets) usage('--roles must not exceed --targets');

const repo = new Repo({ snapshotMetaHashes: true, targetsMetaHashes: true });
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
  repo.addTarget(role, p, `payload ${t} `.repeat(24));
  if (role === names[roles - 1]) lookup = p;
}
fs.rmSync(path.join(outDir, 'metadata'), { recursive: true, force: true });
fs.rmSync(path.join(outDir, 'targets'), { recursive: true, force: true });
repo.write(outDir);
fs.writeFileSync(path.join(outDir, 'bench.json'), `${JSON.stringify({ lookup_target: lookup })}\n`);
console.log(`wrote ${targets} targets in ${roles} delegated roles to ${outDir}`);

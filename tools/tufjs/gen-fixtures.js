#!/usr/bin/env node
'use strict';
// Generates upkeep's interoperability fixtures: TUF repositories written by an independent
// implementation (@tufjs/models, keys and signatures from Node's crypto), and checks that the
// tuf-js client reaches the outcome each fixture's expected.json states.
//
//   node gen-fixtures.js OUTDIR            write OUTDIR/<scenario>/
//   node gen-fixtures.js --verify OUTDIR   run the tuf-js client against OUTDIR/<scenario>/
//
// Each scenario directory holds:
//   initial_root.json   the root (version 1) a client starts from
//   metadata/           the metadata base URL's files (N.root.json, timestamp.json, ...)
//   targets/            the target base URL's files (hash-prefixed with consistent snapshots)
//   expected.json       {"consistent_snapshot": bool, "root_version": N,
//                        "refresh": "ok" | {"error": "<upkeep metadata::Errc name>"},
//                        "targets": {"<path>": {"role": "<role>", "length": N, "sha256": "<hex>"}},
//                        "not_found": ["<path>", ...],
//                        "tampered": {"<path>": "<upkeep metadata::Errc name>"}}

const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const {
  Repo, newKey, serveDirectory, sha256, DelegatedRole, Delegations, SuccinctRoles,
} = require('./lib');

// Deterministic pseudo-random bytes, so target contents are stable between runs.
function bytes(seed, n) {
  const out = Buffer.alloc(n);
  let block = Buffer.from(seed);
  for (let i = 0; i < n; i += 32) {
    block = crypto.createHash('sha256').update(block).digest();
    block.copy(out, i, 0, Math.min(32, n - i));
  }
  return out;
}

function basicRepo(opts = {}) {
  const repo = new Repo(opts);
  for (const role of ['root', 'timestamp', 'snapshot', 'targets']) repo.addRootKey(role);
  repo.addTarget('targets', 'hello.txt', 'hello from a tuf-js repository\n');
  repo.addTarget('targets', 'dir/nested file.bin', bytes('nested', 2048));
  return repo;
}

function expectTargets(repo, entries) {
  const out = {};
  for (const [p, role] of entries) {
    const content = repo.targets[role][p];
    out[p] = { role, length: content.length, sha256: sha256(content) };
  }
  return out;
}

const scenarios = {
  basic() {
    const repo = basicRepo({ metaHashes: true });
    return {
      repo,
      expected: {
        consistent_snapshot: true, root_version: 1, refresh: 'ok',
        targets: expectTargets(repo, [['hello.txt', 'targets'], ['dir/nested file.bin', 'targets']]),
        not_found: ['missing.txt', 'dir'],
      },
    };
  },

  'rotation-threshold'() {
    const repo = new Repo({ metaHashes: false });
    const r1 = repo.addRootKey('root', 'ed25519');
    const r2 = repo.addRootKey('root', 'ecdsa');
    const r3 = repo.addRootKey('root', 'rsa');
    repo.thresholds.root = 2;
    repo.addRootKey('timestamp', 'ecdsa');
    repo.addRootKey('snapshot', 'rsa');
    repo.addRootKey('targets', 'ed25519');
    repo.addRootKey('targets', 'ecdsa');
    repo.addRootKey('targets', 'rsa', false); // listed, does not sign
    repo.thresholds.targets = 2;
    repo.publishRoot([r1, r2, r3]);
    // v2: add a fourth root key, drop the RSA one; signed by v1's threshold and its own.
    const r4 = repo.addRootKey('root', 'ed25519', false);
    repo.rootKeys.root = [r1, r2, r4];
    repo.rootVersion = 2;
    repo.publishRoot([r2, r3, r4]);
    // v3: rotate the timestamp and snapshot keys.
    repo.rootKeys.timestamp = [];
    repo.signers.timestamp = [];
    repo.addRootKey('timestamp', 'ed25519');
    repo.rootKeys.snapshot = [];
    repo.signers.snapshot = [];
    repo.addRootKey('snapshot', 'ecdsa');
    repo.rootVersion = 3;
    repo.publishRoot([r1, r4]);
    repo.signers.root = [r1, r4];
    // An extra signature on targets from a key nobody trusts: must be ignored.
    repo.signers.targets.push(newKey('ed25519'));
    repo.versions = { timestamp: 3, snapshot: 3, targets: 2 };
    repo.addTarget('targets', 'hello.txt', 'hello after two root rotations\n');
    return {
      repo,
      expected: {
        consistent_snapshot: true, root_version: 3, refresh: 'ok',
        targets: expectTargets(repo, [['hello.txt', 'targets']]),
        not_found: ['other.txt'],
      },
    };
  },

  delegations() {
    const repo = basicRepo();
    const keyA = newKey('ed25519');
    const keyA1 = newKey('ed25519');
    const keyB1 = newKey('ecdsa');
    const keyB2 = newKey('rsa');
    const keyC = newKey('ecdsa');
    const keyT = newKey('ed25519');
    const cTarget = 'c/catalogue-item.bin';
    const cPrefix = sha256(cTarget).slice(0, 2);
    const keysOf = (...ks) => Object.fromEntries(ks.map((k) => [k.key.keyID, k.key]));
    const role = (name, ks, threshold, terminating, paths, prefixes) => new DelegatedRole({
      name, keyIDs: ks.map((k) => k.key.keyID), threshold, terminating, paths, pathHashPrefixes: prefixes,
    });
    repo.delegations.targets = () => new Delegations({
      keys: keysOf(keyA, keyB1, keyB2, keyC, keyT),
      roles: {
        A: role('A', [keyA], 1, true, ['a/*', 'a/*/*']),
        B: role('B', [keyB1, keyB2], 2, false, ['a/*', 'b/*']),
        C: role('C', [keyC], 1, false, undefined, [cPrefix]),
        'team/ns:1': role('team/ns:1', [keyT], 1, false, ['t/*']),
      },
    });
    repo.delegations.A = () => new Delegations({
      keys: keysOf(keyA1), roles: { A1: role('A1', [keyA1], 1, false, ['a/deep/*']) },
    });
    repo.delegatedRoles = ['A', 'A1', 'B', 'C', 'team/ns:1'];
    repo.signers.A = [keyA];
    repo.signers.A1 = [keyA1];
    repo.signers.B = [keyB1, keyB2];
    repo.signers.C = [keyC];
    repo.signers['team/ns:1'] = [keyT];
    repo.addTarget('A', 'a/one.txt', 'one, from A\n');
    repo.addTarget('A1', 'a/deep/two.txt', 'two, from A1\n');
    repo.addTarget('B', 'a/only-in-b.txt', 'shadowed by the terminating role A\n');
    repo.addTarget('B', 'b/three.txt', 'three, from B\n');
    repo.addTarget('C', cTarget, bytes('catalogue', 700));
    repo.addTarget('team/ns:1', 't/four.txt', 'four, from team/ns:1\n');
    repo.addTarget('targets', 'top.txt', 'top-level\n');
    return {
      repo,
      expected: {
        consistent_snapshot: true, root_version: 1, refresh: 'ok',
        targets: expectTargets(repo, [
          ['a/one.txt', 'A'], ['a/deep/two.txt', 'A1'], ['b/three.txt', 'B'], [cTarget, 'C'],
          ['t/four.txt', 'team/ns:1'], ['top.txt', 'targets'], ['hello.txt', 'targets'],
        ]),
        not_found: ['a/only-in-b.txt', 'b/missing.txt', 'z/nowhere.txt'],
      },
    };
  },

  'hash-bins'() {
    const repo = basicRepo();
    const binKey = newKey('ed25519');
    const succinct = new SuccinctRoles({ keyIDs: [binKey.key.keyID], threshold: 1, bitLength: 3, namePrefix: 'bins' });
    repo.delegations.targets = () => new Delegations({
      keys: { [binKey.key.keyID]: binKey.key }, succinctRoles: succinct,
    });
    for (const bin of succinct.getRoles()) {
      repo.delegatedRoles.push(bin);
      repo.signers[bin] = [binKey];
      repo.targets[bin] = {};
    }
    const entries = [];
    for (let i = 0; i < 40; i += 1) {
      const p = `catalogue/item-${String(i).padStart(3, '0')}.bin`;
      const bin = succinct.getRoleForTarget(p);
      repo.addTarget(bin, p, bytes(p, 64 + i));
      entries.push([p, bin]);
    }
    return {
      repo,
      expected: {
        consistent_snapshot: true, root_version: 1, refresh: 'ok',
        targets: expectTargets(repo, entries), not_found: ['catalogue/item-999.bin'],
      },
    };
  },

  'non-consistent'() {
    const repo = basicRepo({ consistent: false, metaHashes: true });
    return {
      repo,
      expected: {
        consistent_snapshot: false, root_version: 1, refresh: 'ok',
        targets: expectTargets(repo, [['hello.txt', 'targets'], ['dir/nested file.bin', 'targets']]),
        not_found: ['missing.txt'],
      },
    };
  },

  'expired-timestamp'() {
    const repo = basicRepo();
    repo.expires.timestamp = '2001-01-01T00:00:00Z';
    return {
      repo,
      expected: {
        consistent_snapshot: true, root_version: 1, refresh: { error: 'Expired' }, targets: {}, not_found: [],
      },
    };
  },

  'tampered-target'() {
    const repo = basicRepo();
    repo.addTarget('targets', 'appended.bin', bytes('appended', 512));
    return {
      repo,
      expected: {
        consistent_snapshot: true, root_version: 1, refresh: 'ok',
        targets: expectTargets(repo, [['dir/nested file.bin', 'targets']]),
        not_found: [],
        tampered: { 'hello.txt': 'TargetHashMismatch', 'appended.bin': 'TargetLengthMismatch' },
      },
      // After writing: flip one byte of hello.txt, append bytes to appended.bin.
      tamper(dir) {
        for (const [p, how] of [['hello.txt', 'flip'], ['appended.bin', 'append']]) {
          const content = repo.targets.targets[p];
          const file = path.join(dir, 'targets', `${sha256(content)}.${p}`);
          const data = fs.readFileSync(file);
          if (how === 'flip') data[0] ^= 0x01;
          fs.writeFileSync(file, how === 'flip' ? data : Buffer.concat([data, Buffer.from('extra')]));
        }
      },
    };
  },
};

function generate(outDir) {
  for (const [name, make] of Object.entries(scenarios)) {
    const dir = path.join(outDir, name);
    fs.rmSync(dir, { recursive: true, force: true });
    const { repo, expected, tamper } = make();
    repo.write(dir);
    if (tamper) tamper(dir);
    fs.writeFileSync(path.join(dir, 'expected.json'), JSON.stringify(expected, null, 2) + '\n');
    console.log(`wrote ${name}`);
  }
}

async function verifyScenario(dir, base) {
  const { Updater } = require('tuf-js');
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json')));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'upkeep-tufjs-'));
  try {
    fs.mkdirSync(path.join(tmp, 'metadata'));
    fs.mkdirSync(path.join(tmp, 'targets'));
    fs.copyFileSync(path.join(dir, 'initial_root.json'), path.join(tmp, 'metadata', 'root.json'));
    const name = path.basename(dir);
    const updater = new Updater({
      metadataDir: path.join(tmp, 'metadata'), targetDir: path.join(tmp, 'targets'),
      metadataBaseUrl: `${base}/${name}/metadata/`, targetBaseUrl: `${base}/${name}/targets/`,
      config: { fetchRetries: 0 },
    });
    let refreshError = null;
    try {
      await updater.refresh();
    } catch (e) {
      refreshError = e;
    }
    const problems = [];
    if (expected.refresh === 'ok' && refreshError) problems.push(`refresh failed: ${refreshError.message}`);
    if (expected.refresh !== 'ok' && !refreshError) problems.push('refresh succeeded, expected an error');
    if (!refreshError) {
      for (const [p, want] of Object.entries(expected.targets)) {
        const info = await updater.getTargetInfo(p);
        if (!info) { problems.push(`${p}: not found`); continue; }
        if (info.length !== want.length || info.hashes.sha256 !== want.sha256) problems.push(`${p}: wrong info`);
        const file = await updater.downloadTarget(info);
        if (sha256(fs.readFileSync(file)) !== want.sha256) problems.push(`${p}: wrong content`);
      }
      for (const p of expected.not_found) {
        if (await updater.getTargetInfo(p)) problems.push(`${p}: found, expected not found`);
      }
      for (const p of Object.keys(expected.tampered || {})) {
        const info = await updater.getTargetInfo(p);
        let accepted = true;
        try { await updater.downloadTarget(info); } catch (e) { accepted = false; }
        if (accepted) problems.push(`${p}: tampered target accepted`);
      }
    }
    return problems;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function verify(outDir) {
  const { server, base } = await serveDirectory(outDir);
  let failed = 0;
  try {
    for (const name of fs.readdirSync(outDir).sort()) {
      if (!fs.existsSync(path.join(outDir, name, 'expected.json'))) continue;
      const problems = await verifyScenario(path.join(outDir, name), base);
      console.log(`${problems.length ? 'FAIL' : 'ok  '} ${name}${problems.length ? ': ' + problems.join('; ') : ''}`);
      failed += problems.length ? 1 : 0;
    }
  } finally {
    server.close();
  }
  if (failed) process.exit(1);
}

const args = process.argv.slice(2);
if (args[0] === '--verify' && args[1]) {
  verify(args[1]).catch((e) => { console.error(e); process.exit(1); });
} else if (args[0] && !args[0].startsWith('-')) {
  generate(args[0]);
} else {
  console.error('usage: gen-fixtures.js OUTDIR | gen-fixtures.js --verify OUTDIR');
  process.exit(2);
}

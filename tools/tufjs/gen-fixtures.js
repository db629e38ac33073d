#!/usr/bin/env node
'use strict';
// Generates upkeep's interoperability fixtures: TUF repositories written by an independent
// implementation (@tufjs/models 3.0.1; keys and signatures from Node's crypto), and checks that the
// tuf-js 3.1.0 client reaches the outcome each fixture's expected.json states.
//
//   node gen-fixtures.js OUTDIR            write OUTDIR/<scenario>/ for every scenario
//   node gen-fixtures.js --verify OUTDIR   serve OUTDIR on 127.0.0.1 and run the tuf-js client
//                                          against every OUTDIR/<scenario>/expected.json; prints
//                                          one line per scenario, exits 1 on any disagreement
//
// Each scenario directory holds:
//   initial_root.json   the root (version 1) a client starts from
//   metadata/           the metadata base URL: N.root.json for every root version, timestamp.json,
//                       and V.snapshot.json, V.targets.json, V.<role>.json with consistent
//                       snapshots (snapshot.json, targets.json, <role>.json without). <role> is the
//                       role name percent-encoded like Python's urllib.parse.quote(name, safe='');
//                       when that differs from the name, a decoded copy is stored as well (for web
//                       servers that decode %2F: "1.team/ns:1.json" next to "1.team%2Fns%3A1.json")
//   targets/            the target base URL: each target at <dir>/<sha256>.<basename> with
//                       consistent snapshots, at its path without
//   expected.json       what a correct client concludes:
//     {
//       "consistent_snapshot": true | false,
//       "root_version": N,         root version trusted after refresh (also when refresh fails)
//       "timestamp_version": N,    versions served by the repository; after a successful
//       "snapshot_version": N,       refresh they are the client's trusted versions
//       "targets_version": N,
//       "refresh": "ok" | {"error": "<name>"},   refresh outcome; <name> is an upkeep
//                                                metadata::Errc name, e.g. "Expired"
//       "targets": {"<path>": {"role": "<role whose metadata resolves it>",
//                              "length": N, "sha256": "<lowercase hex>"}},
//                                  resolvable targets; each downloads and verifies
//       "not_found": ["<path>", ...],   paths no trusted role resolves
//       "tampered": {"<path>": "TargetHashMismatch" | "TargetLengthMismatch"}
//                                  optional: resolvable targets whose served bytes must be rejected
//     }
// Keys are generated afresh on every run, so regenerating changes keys and signatures; file names
// and target contents are deterministic.

const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const {
  Repo, newKey, serveDirectory, sha256, quote, DelegatedRole, Delegations, SuccinctRoles,
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

// Where a target is served under targets/.
function servedPath(consistent, targetPath, content) {
  if (!consistent) return targetPath;
  const dir = path.posix.dirname(targetPath);
  const base = path.posix.basename(targetPath);
  return `${dir === '.' ? '' : `${dir}/`}${sha256(content)}.${base}`;
}

function basicRepo(opts = {}) {
  const repo = new Repo(opts);
  for (const role of ['root', 'timestamp', 'snapshot', 'targets']) repo.addRootKey(role);
  repo.addTarget('targets', 'hello.txt', 'hello from a tuf-js repository\n');
  repo.addTarget('targets', 'dir/nested file.bin', bytes('nested', 2048));
  return repo;
}

// The common part of expected.json, from the repository as written.
function expectation(repo, { refresh = 'ok', targets = [], notFound = [], tampered } = {}) {
  const found = {};
  for (const [p, role] of targets) {
    const content = repo.targets[role][p];
    if (!content) throw new Error(`scenario error: ${p} is not in role ${role}`);
    found[p] = { role, length: content.length, sha256: sha256(content) };
  }
  const out = {
    consistent_snapshot: repo.consistent,
    root_version: repo.rootVersion,
    timestamp_version: repo.versions.timestamp,
    snapshot_version: repo.versions.snapshot,
    targets_version: repo.versions.targets,
    refresh,
    targets: found,
    not_found: notFound,
  };
  if (tampered) out.tampered = tampered;
  return out;
}

const scenarios = {
  // Consistent snapshot, one Ed25519 key per role; timestamp and snapshot meta carry length and
  // hashes.
  basic() {
    const repo = basicRepo({ snapshotMetaHashes: true, targetsMetaHashes: true });
    return {
      repo,
      expected: expectation(repo, {
        targets: [['hello.txt', 'targets'], ['dir/nested file.bin', 'targets']],
        notFound: ['missing.txt', 'dir', 'dir/nested', 'Hello.txt'],
      }),
    };
  },

  // Root v1 -> v2 -> v3 with 2-of-3 root keys of three types; targets 2-of-3 signed by exactly
  // two listed keys plus one key nobody trusts.
  'rotation-threshold'() {
    const repo = new Repo();
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
    // v2: add a fourth root key, drop the RSA one. Signed by 2 of v1's keys (r2, r3) and 2 of its
    // own (r2, r4).
    const r4 = repo.addRootKey('root', 'ed25519', false);
    repo.rootKeys.root = [r1, r2, r4];
    repo.rootVersion = 2;
    repo.publishRoot([r2, r3, r4]);
    // v3: rotate the timestamp and snapshot keys. Signed by 2 of v2's keys, which are also its own.
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
      expected: expectation(repo, { targets: [['hello.txt', 'targets']], notFound: ['other.txt'] }),
    };
  },

  // Pre-order search with a terminating role, a nested role, a 2-of-2 role, a hash-prefix role and
  // a role whose name needs percent-encoding. Snapshot meta carries length and hashes of every
  // targets role (timestamp meta does not).
  delegations() {
    const repo = basicRepo({ targetsMetaHashes: true });
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
    // A wildcard never matches '/', so A lists "a/*/*" as well: A1 is only consulted for paths A
    // itself matches.
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
      expected: expectation(repo, {
        targets: [
          ['a/one.txt', 'A'], ['a/deep/two.txt', 'A1'], ['b/three.txt', 'B'], [cTarget, 'C'],
          ['t/four.txt', 'team/ns:1'], ['top.txt', 'targets'], ['hello.txt', 'targets'],
        ],
        notFound: ['a/only-in-b.txt', 'a/deep/missing.txt', 'b/missing.txt', 't/x/four.txt', 'z/nowhere.txt'],
      }),
    };
  },

  // Succinct hash bins: bit_length 3, 8 roles bins-0 ... bins-7 sharing one key, 40 targets.
  'hash-bins'() {
    const repo = basicRepo();
    const binKey = newKey('ed25519');
    const bitLength = 3;
    const succinct = new SuccinctRoles({ keyIDs: [binKey.key.keyID], threshold: 1, bitLength, namePrefix: 'bins' });
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
      // The bin is the first bit_length bits of SHA-256(path), in hex after "bins-".
      const bin = `bins-${(crypto.createHash('sha256').update(p).digest()[0] >> (8 - bitLength)).toString(16)}`;
      if (bin !== succinct.getRoleForTarget(p)) throw new Error(`bin disagreement for ${p}`);
      repo.addTarget(bin, p, bytes(p, 64 + i));
      entries.push([p, bin]);
    }
    return {
      repo,
      expected: expectation(repo, { targets: entries, notFound: ['catalogue/item-999.bin', 'bins-0'] }),
    };
  },

  // consistent_snapshot false: unversioned snapshot and targets, targets at their paths.
  // Timestamp meta carries length and hashes, snapshot meta does not.
  'non-consistent'() {
    const repo = basicRepo({ consistent: false, snapshotMetaHashes: true });
    return {
      repo,
      expected: expectation(repo, {
        targets: [['hello.txt', 'targets'], ['dir/nested file.bin', 'targets']],
        notFound: ['missing.txt'],
      }),
    };
  },

  // The timestamp expired in 2001: refresh fails.
  'expired-timestamp'() {
    const repo = basicRepo();
    repo.expires.timestamp = '2001-01-01T00:00:00Z';
    return { repo, expected: expectation(repo, { refresh: { error: 'Expired' } }) };
  },

  // Served targets differ from the signed ones: one byte flipped, bytes appended.
  'tampered-target'() {
    const repo = basicRepo();
    repo.addTarget('targets', 'appended.bin', bytes('appended', 512));
    const tampered = { 'hello.txt': 'TargetHashMismatch', 'appended.bin': 'TargetLengthMismatch' };
    return {
      repo,
      expected: expectation(repo, { targets: [['dir/nested file.bin', 'targets']], tampered }),
      tamper(dir) {
        for (const [p, code] of Object.entries(tampered)) {
          const file = path.join(dir, 'targets', servedPath(repo.consistent, p, repo.targets.targets[p]));
          const data = fs.readFileSync(file);
          if (code === 'TargetHashMismatch') data[data.length >> 1] ^= 0x01;
          fs.writeFileSync(file, code === 'TargetHashMismatch' ? data : Buffer.concat([data, Buffer.from('extra')]));
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
    fs.writeFileSync(path.join(dir, 'expected.json'), `${JSON.stringify(expected, null, 2)}\n`);
    console.log(`wrote ${name}`);
  }
}

// tuf-js errors that correspond to upkeep's metadata::Errc names used in expected.json.
function tufJsAgrees(code, error) {
  const cls = error && error.constructor ? error.constructor.name : '';
  const msg = error ? String(error.message) : '';
  switch (code) {
    case 'Expired':
      return cls === 'ExpiredMetadataError';
    case 'TargetHashMismatch':
      return cls === 'LengthOrHashMismatchError' && /hash/i.test(msg);
    case 'TargetLengthMismatch':
      return cls === 'DownloadLengthMismatchError'
        || (cls === 'LengthOrHashMismatchError' && /length/i.test(msg));
    default:
      return false;
  }
}

// Layout checks that do not need a client.
function checkLayout(dir, expected) {
  const problems = [];
  const md = path.join(dir, 'metadata');
  const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f) : null);
  const initial = read(path.join(dir, 'initial_root.json'));
  if (!initial || !initial.equals(read(path.join(md, '1.root.json')) || Buffer.alloc(0))) {
    problems.push('initial_root.json differs from metadata/1.root.json');
  }
  for (let v = 1; v <= expected.root_version; v += 1) {
    if (!read(path.join(md, `${v}.root.json`))) problems.push(`metadata/${v}.root.json missing`);
  }
  if (read(path.join(md, `${expected.root_version + 1}.root.json`))) problems.push('a root newer than root_version is served');
  const cs = expected.consistent_snapshot;
  for (const [role, v] of [['snapshot', expected.snapshot_version], ['targets', expected.targets_version]]) {
    const f = cs ? `${v}.${role}.json` : `${role}.json`;
    if (!read(path.join(md, f))) problems.push(`metadata/${f} missing`);
  }
  if (!read(path.join(md, 'timestamp.json'))) problems.push('metadata/timestamp.json missing');
  // Every targets role the snapshot lists is served under its percent-encoded name, and under
  // its decoded name too when that differs, with identical bytes.
  const snapshot = read(path.join(md, cs ? `${expected.snapshot_version}.snapshot.json` : 'snapshot.json'));
  const meta = snapshot ? JSON.parse(snapshot.toString('utf8')).signed.meta : {};
  for (const [file, { version }] of Object.entries(meta)) {
    const role = file.slice(0, -'.json'.length);
    const served = (n) => (cs ? `${version}.${n}.json` : `${n}.json`);
    const encoded = read(path.join(md, served(quote(role))));
    if (!encoded) problems.push(`metadata/${served(quote(role))} missing`);
    if (quote(role) !== role) {
      const decoded = read(path.join(md, ...served(role).split('/')));
      if (encoded && (!decoded || !decoded.equals(encoded))) problems.push(`metadata/${served(role)}: no identical decoded copy`);
    }
  }
  return problems;
}

async function runClient(dir, name, base) {
  const { Updater } = require('tuf-js');
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8'));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'upkeep-tufjs-'));
  const problems = [];
  try {
    const metadataDir = path.join(tmp, 'metadata');
    const targetDir = path.join(tmp, 'targets');
    fs.mkdirSync(metadataDir);
    fs.mkdirSync(targetDir);
    fs.copyFileSync(path.join(dir, 'initial_root.json'), path.join(metadataDir, 'root.json'));
    const updater = new Updater({
      metadataDir, targetDir,
      metadataBaseUrl: `${base}/${encodeURIComponent(name)}/metadata/`,
      targetBaseUrl: `${base}/${encodeURIComponent(name)}/targets/`,
      config: { fetchRetries: 0 },
    });
    let refreshError = null;
    try {
      await updater.refresh();
    } catch (e) {
      refreshError = e;
    }
    // tuf-js keeps its trusted metadata in a private field; read it to compare versions.
    const trusted = updater.trustedSet;
    if (trusted.root.signed.version !== expected.root_version) {
      problems.push(`trusts root v${trusted.root.signed.version}, expected v${expected.root_version}`);
    }
    if (trusted.root.signed.consistentSnapshot !== expected.consistent_snapshot) {
      problems.push('consistent_snapshot differs');
    }
    const stored = fs.readFileSync(path.join(metadataDir, 'root.json'));
    if (!stored.equals(fs.readFileSync(path.join(dir, 'metadata', `${expected.root_version}.root.json`)))) {
      problems.push('persisted root.json is not the expected root version');
    }
    if (expected.refresh === 'ok') {
      if (refreshError) {
        problems.push(`refresh failed: ${refreshError.constructor.name}: ${refreshError.message}`);
        return problems;
      }
      for (const role of ['timestamp', 'snapshot', 'targets']) {
        const got = trusted[role] && trusted[role].signed.version;
        if (got !== expected[`${role}_version`]) problems.push(`${role} v${got}, expected v${expected[`${role}_version`]}`);
      }
    } else {
      if (!refreshError) problems.push(`refresh succeeded, expected ${expected.refresh.error}`);
      else if (!tufJsAgrees(expected.refresh.error, refreshError)) {
        problems.push(`refresh failed with ${refreshError.constructor.name} (${refreshError.message}), expected ${expected.refresh.error}`);
      }
      return problems;
    }

    // A lookup that fails (e.g. a delegated role does not verify) counts as not found, reported.
    const lookup = async (p) => {
      try {
        return await updater.getTargetInfo(p);
      } catch (e) {
        problems.push(`${p}: lookup failed: ${e.constructor.name}: ${e.message}`);
        return undefined;
      }
    };
    for (const [p, want] of Object.entries(expected.targets)) {
      const info = await lookup(p);
      if (!info) {
        problems.push(`${p}: not found`);
        continue;
      }
      if (info.length !== want.length || info.hashes.sha256 !== want.sha256) problems.push(`${p}: wrong length or hash`);
      // The expected role is loaded and lists the target with the same hash.
      const roleMd = want.role === 'targets' ? trusted.targets : trusted.getRole(want.role);
      const listed = roleMd && roleMd.signed.targets[p];
      if (!listed || listed.hashes.sha256 !== want.sha256) problems.push(`${p}: not resolved through ${want.role}`);
      try {
        const file = await updater.downloadTarget(info, path.join(targetDir, encodeURIComponent(p)));
        if (sha256(fs.readFileSync(file)) !== want.sha256) problems.push(`${p}: downloaded bytes differ`);
      } catch (e) {
        problems.push(`${p}: download failed: ${e.constructor.name}: ${e.message}`);
      }
    }
    for (const p of expected.not_found) {
      if (await lookup(p)) problems.push(`${p}: found, expected not found`);
    }
    for (const [p, code] of Object.entries(expected.tampered || {})) {
      const info = await lookup(p);
      if (!info) {
        problems.push(`${p}: not found, expected ${code}`);
        continue;
      }
      const out = path.join(targetDir, encodeURIComponent(p));
      try {
        await updater.downloadTarget(info, out);
        problems.push(`${p}: tampered target accepted`);
      } catch (e) {
        if (!tufJsAgrees(code, e)) problems.push(`${p}: rejected with ${e.constructor.name} (${e.message}), expected ${code}`);
      }
      if (fs.existsSync(out)) problems.push(`${p}: tampered bytes written`);
    }
    return problems;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// Runs every scenario against two servers: one that percent-decodes request paths (%2F included)
// and one that looks up the undecoded path first, so both copies of an encoded role name are used.
async function verify(outDir) {
  const names = fs.readdirSync(outDir)
    .filter((n) => fs.existsSync(path.join(outDir, n, 'expected.json')))
    .sort();
  if (names.length === 0) {
    console.error(`no scenarios under ${outDir}`);
    process.exit(1);
  }
  const servers = [
    await serveDirectory(outDir),
    await serveDirectory(outDir, { literalFirst: true }),
  ];
  let failed = 0;
  try {
    for (const name of names) {
      const dir = path.join(outDir, name);
      const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8'));
      const problems = checkLayout(dir, expected);
      for (const [i, { base }] of servers.entries()) {
        const label = i === 0 ? 'decoding server' : 'literal server';
        for (const p of await runClient(dir, name, base)) problems.push(`${label}: ${p}`);
      }
      const unique = [...new Set(problems)];
      const outcome = expected.refresh === 'ok' ? 'refresh ok' : `refresh ${expected.refresh.error}`;
      const counts = `${Object.keys(expected.targets).length} found, ${expected.not_found.length} not found, `
        + `${Object.keys(expected.tampered || {}).length} tampered`;
      console.log(unique.length ? `FAIL ${name}: ${unique.join('; ')}` : `ok   ${name} (${outcome}; ${counts})`);
      if (unique.length) failed += 1;
    }
  } finally {
    for (const { server } of servers) server.close();
  }
  if (failed) {
    console.error(`${failed} of ${names.length} scenarios disagree with expected.json`);
    process.exit(1);
  }
}

const args = process.argv.slice(2);
if (args.length === 2 && args[0] === '--verify') {
  verify(args[1]).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else if (args.length === 1 && !args[0].startsWith('-')) {
  generate(args[0]);
} else {
  console.error('usage: gen-fixtures.js OUTDIR | gen-fixtures.js --verify OUTDIR');
  process.exit(2);
}

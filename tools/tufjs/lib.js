'use strict';
// Shared helpers for upkeep's tuf-js based test tooling: keys, signing and a small repository
// writer built on @tufjs/models. Test tooling only; nothing here ships with upkeep.

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const http = require('http');
const {
  Metadata, Root, Timestamp, Snapshot, Targets, Key, MetaFile, TargetFile, Signature,
} = require('@tufjs/models');
// Not re-exported by the package index.
const { Role, DelegatedRole, SuccinctRoles } = require('@tufjs/models/dist/role');
const { Delegations } = require('@tufjs/models/dist/delegations');
const { canonicalize } = require('@tufjs/canonical-json');

const SPEC_VERSION = '1.0.31';
const FAR_FUTURE = '2099-01-01T00:00:00Z';
const ROLES = ['root', 'timestamp', 'snapshot', 'targets'];

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

// Percent-encodes a role name for use in a file name or URL, like Python's
// urllib.parse.quote(name, safe=''): encodeURIComponent plus ! ' ( ) *.
const quote = (name) => encodeURIComponent(name)
  .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

// A fresh key of the given type ('ed25519' | 'ecdsa' | 'rsa') in TUF form with its private half.
function newKey(type) {
  let pair;
  let keytype;
  let scheme;
  let pub;
  if (type === 'ed25519') {
    pair = crypto.generateKeyPairSync('ed25519');
    keytype = 'ed25519';
    scheme = 'ed25519';
    pub = pair.publicKey.export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex');
  } else if (type === 'ecdsa') {
    pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    keytype = 'ecdsa';
    scheme = 'ecdsa-sha2-nistp256';
    pub = pair.publicKey.export({ format: 'pem', type: 'spki' });
  } else if (type === 'rsa') {
    pair = crypto.generateKeyPairSync('rsa', { modulusLength: 3072 });
    keytype = 'rsa';
    scheme = 'rsassa-pss-sha256';
    pub = pair.publicKey.export({ format: 'pem', type: 'spki' });
  } else {
    throw new Error(`unknown key type ${type}`);
  }
  const keyval = { public: pub };
  const keyID = sha256(canonicalize({ keytype, scheme, keyval }));
  return { type, key: new Key({ keyID, keyType: keytype, scheme, keyVal: keyval }), privateKey: pair.privateKey };
}

function signWith(k) {
  return (data) => {
    let sig;
    if (k.type === 'ed25519') sig = crypto.sign(null, data, k.privateKey);
    else if (k.type === 'ecdsa') sig = crypto.sign('sha256', data, k.privateKey);
    else {
      sig = crypto.sign('sha256', data, {
        key: k.privateKey,
        padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
        saltLength: crypto.constants.RSA_PSS_SALTLEN_DIGEST,
      });
    }
    return new Signature({ keyID: k.key.keyID, sig: sig.toString('hex') });
  };
}

function envelope(signed, signers) {
  const md = new Metadata(signed);
  for (const k of signers) md.sign(signWith(k), true);
  return JSON.stringify(md.toJSON(), null, 1);
}

function writeFile(file, data) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
}

// A repository under construction. Bodies are rebuilt from plain state on each publish.
class Repo {
  // snapshotMetaHashes: timestamp's meta for snapshot carries length and hashes.
  // targetsMetaHashes: snapshot's meta for each targets role carries length and hashes.
  constructor({ consistent = true, snapshotMetaHashes = false, targetsMetaHashes = false } = {}) {
    this.consistent = consistent;
    this.snapshotMetaHashes = snapshotMetaHashes;
    this.targetsMetaHashes = targetsMetaHashes;
    this.rootVersion = 1;
    this.rootKeys = {}; // role -> [key]
    this.thresholds = { root: 1, timestamp: 1, snapshot: 1, targets: 1 };
    this.signers = {}; // role -> [key] that sign it
    this.expires = { root: FAR_FUTURE, timestamp: FAR_FUTURE, snapshot: FAR_FUTURE, targets: FAR_FUTURE };
    this.versions = { timestamp: 1, snapshot: 1, targets: 1 };
    this.targets = {}; // role -> { path -> content }
    this.targets.targets = {};
    this.delegations = {}; // delegator role -> Delegations factory () => Delegations
    this.delegatedRoles = []; // names in creation order
    this.publishedRoots = []; // [{version, bytes}]
    for (const role of ROLES) this.rootKeys[role] = [];
  }

  addRootKey(role, type = 'ed25519', sign = true) {
    const k = newKey(type);
    this.rootKeys[role].push(k);
    if (sign) (this.signers[role] = this.signers[role] || []).push(k);
    return k;
  }

  rootBody() {
    const keys = {};
    const roles = {};
    for (const role of ROLES) {
      for (const k of this.rootKeys[role]) keys[k.key.keyID] = k.key;
      roles[role] = new Role({ keyIDs: this.rootKeys[role].map((k) => k.key.keyID), threshold: this.thresholds[role] });
    }
    return new Root({
      version: this.rootVersion, specVersion: SPEC_VERSION, expires: this.expires.root,
      keys, roles, consistentSnapshot: this.consistent,
    });
  }

  // Signs the current root with `signers` (default: the root role's signers) and records it.
  publishRoot(signers) {
    const bytes = envelope(this.rootBody(), signers || this.signers.root);
    this.publishedRoots.push({ version: this.rootVersion, bytes });
    return bytes;
  }

  addTarget(role, targetPath, content) {
    (this.targets[role] = this.targets[role] || {})[targetPath] = Buffer.from(content);
  }

  targetsBody(role) {
    const files = {};
    for (const [p, content] of Object.entries(this.targets[role] || {})) {
      files[p] = new TargetFile({ path: p, length: content.length, hashes: { sha256: sha256(content) } });
    }
    const version = this.versions[role] || 1;
    const factory = this.delegations[role];
    return new Targets({
      version, specVersion: SPEC_VERSION, expires: this.expires[role] || FAR_FUTURE,
      targets: files, delegations: factory ? factory() : undefined,
    });
  }

  static metaFile(version, bytes, withHashes) {
    if (!withHashes) return new MetaFile({ version });
    return new MetaFile({ version, length: Buffer.byteLength(bytes), hashes: { sha256: sha256(bytes) } });
  }

  // Writes metadata/ and targets/ under outDir, plus initial_root.json.
  write(outDir) {
    const md = path.join(outDir, 'metadata');
    const tg = path.join(outDir, 'targets');
    if (this.publishedRoots.length === 0) this.publishRoot();
    for (const { version, bytes } of this.publishedRoots) writeFile(path.join(md, `${version}.root.json`), bytes);
    writeFile(path.join(outDir, 'initial_root.json'), this.publishedRoots[0].bytes);

    const name = (role, version) => (this.consistent ? `${version}.${role}.json` : `${role}.json`);
    const meta = {};
    for (const role of ['targets', ...this.delegatedRoles]) {
      const bytes = envelope(this.targetsBody(role), this.signers[role]);
      const version = this.versions[role] || 1;
      // Clients request a role by its percent-encoded name, and that is the file's name. A web
      // server that decodes the request path (%2F included, as most do) looks for the decoded
      // name instead, so a name that changes when encoded is also stored decoded (a name with
      // '/' then lives in a subdirectory). Both copies hold the same bytes.
      writeFile(path.join(md, name(quote(role), version)), bytes);
      if (quote(role) !== role) writeFile(path.join(md, ...name(role, version).split('/')), bytes);
      meta[`${role}.json`] = Repo.metaFile(version, bytes, this.targetsMetaHashes);
    }
    const snapshotBytes = envelope(new Snapshot({
      version: this.versions.snapshot, specVersion: SPEC_VERSION, expires: this.expires.snapshot, meta,
    }), this.signers.snapshot);
    writeFile(path.join(md, name('snapshot', this.versions.snapshot)), snapshotBytes);
    const timestampBytes = envelope(new Timestamp({
      version: this.versions.timestamp, specVersion: SPEC_VERSION, expires: this.expires.timestamp,
      snapshotMeta: Repo.metaFile(this.versions.snapshot, snapshotBytes, this.snapshotMetaHashes),
    }), this.signers.timestamp);
    writeFile(path.join(md, 'timestamp.json'), timestampBytes);

    for (const role of Object.keys(this.targets)) {
      for (const [p, content] of Object.entries(this.targets[role])) {
        const dir = path.posix.dirname(p) === '.' ? '' : path.posix.dirname(p) + '/';
        const base = path.posix.basename(p);
        const served = this.consistent ? `${dir}${sha256(content)}.${base}` : p;
        writeFile(path.join(tg, served), content);
      }
    }
  }
}

// Serves a directory on 127.0.0.1 (port 0). By default the request path is percent-decoded
// (%2F included) before it is looked up, like a typical static web server; with
// { literalFirst: true } the undecoded path is tried first, like a server that maps URL path
// segments to file names verbatim.
function serveDirectory(root, { literalFirst = false } = {}) {
  const base = path.resolve(root);
  const lookup = (urlPath) => {
    const candidates = [];
    if (literalFirst) candidates.push(urlPath);
    try {
      candidates.push(decodeURIComponent(urlPath));
    } catch (e) {
      // Malformed escapes: only the literal form, if any.
    }
    for (const c of candidates) {
      if (c.includes('\0')) continue;
      const file = path.join(base, c);
      if (file.startsWith(base + path.sep) && fs.existsSync(file) && fs.statSync(file).isFile()) return file;
    }
    return null;
  };
  const server = http.createServer((req, res) => {
    const file = req.method === 'GET' ? lookup(req.url.split('?')[0]) : null;
    if (!file) {
      res.writeHead(404, { 'Content-Length': 0 });
      res.end();
      return;
    }
    const data = fs.readFileSync(file);
    res.writeHead(200, { 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' });
    res.end(data);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

module.exports = {
  DelegatedRole, SuccinctRoles, Delegations,
  newKey, signWith, envelope, writeFile, Repo, serveDirectory, sha256, quote, SPEC_VERSION, FAR_FUTURE,
};

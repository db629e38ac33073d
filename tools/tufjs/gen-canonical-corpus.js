#!/usr/bin/env node
'use strict';
// Writes the canonical JSON corpus:
//   OUTDIR/inputs/NNN-name.json     input texts (UTF-8)
//   OUTDIR/expected/NNN-name.canon  the bytes @tufjs/canonical-json produces for
//                                   canonicalize(JSON.parse(input)), as UTF-8
//   OUTDIR/README.md                what the corpus is and how it was made
// upkeep's Canonicalize must match every pair byte for byte.
//
// Inputs JavaScript cannot represent faithfully are refused (checked by a small strict parser
// below): floats and exponents, integers beyond +/-(2^53 - 1), -0, lone surrogates (escaped or
// raw), duplicate keys and "__proto__" keys. Output is deterministic: rerunning rewrites the same
// bytes.
//
//   node gen-canonical-corpus.js OUTDIR

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { canonicalize } = require('@tufjs/canonical-json');
const { Metadata, Root, Key, Signature } = require('@tufjs/models');
const { Role } = require('@tufjs/models/dist/role');

const nestedArrays = (depth) => `${'['.repeat(depth)}"deep"${']'.repeat(depth)}`;
const nestedObjects = (depth) => `${'{"k":'.repeat(depth)}1${'}'.repeat(depth)}`;
const nestedMixed = (depth) => `${'{"a":['.repeat(depth)}{"z":null,"b":-1}${']}'.repeat(depth)}`;
const allControlEscapes = Array.from({ length: 32 }, (_, i) => `\\u${i.toString(16).padStart(4, '0')}`).join('');

// A real TUF root, reproducible: Ed25519 keys from fixed seeds (their signatures are
// deterministic) and one ECDSA P-256 key from a fixed scalar, whose PEM puts newlines in a value.
function ed25519FromSeed(label) {
  const seed = crypto.createHash('sha256').update(label).digest();
  const privateKey = crypto.createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8',
  });
  const pub = crypto.createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(-32).toString('hex');
  return { privateKey, keytype: 'ed25519', scheme: 'ed25519', keyval: { public: pub } };
}

function ecdsaFromScalar(label) {
  const d = crypto.createHash('sha256').update(label).digest();
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(d);
  const point = ecdh.getPublicKey();
  const b64url = (b) => b.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const jwk = { kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) };
  const pem = crypto.createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' });
  return { keytype: 'ecdsa', scheme: 'ecdsa-sha2-nistp256', keyval: { public: pem } };
}

function tufRoot() {
  const withId = (k) => ({
    ...k,
    key: new Key({
      keyID: crypto.createHash('sha256').update(canonicalize({ keytype: k.keytype, scheme: k.scheme, keyval: k.keyval })).digest('hex'),
      keyType: k.keytype, scheme: k.scheme, keyVal: k.keyval,
    }),
  });
  const rootKeys = [withId(ed25519FromSeed('corpus root 1')), withId(ed25519FromSeed('corpus root 2')), withId(ecdsaFromScalar('corpus root 3'))];
  const roleKeys = {
    root: rootKeys,
    timestamp: [withId(ed25519FromSeed('corpus timestamp'))],
    snapshot: [withId(ed25519FromSeed('corpus snapshot'))],
    targets: [withId(ed25519FromSeed('corpus targets')), withId(ecdsaFromScalar('corpus targets 2'))],
  };
  const keys = {};
  const roles = {};
  for (const [role, ks] of Object.entries(roleKeys)) {
    for (const k of ks) keys[k.key.keyID] = k.key;
    roles[role] = new Role({ keyIDs: ks.map((k) => k.key.keyID), threshold: role === 'root' ? 2 : 1 });
  }
  const md = new Metadata(new Root({
    version: 1, specVersion: '1.0.31', expires: '2099-01-01T00:00:00Z', keys, roles, consistentSnapshot: true,
  }));
  for (const k of rootKeys.slice(0, 2)) {
    md.sign((data) => new Signature({ keyID: k.key.keyID, sig: crypto.sign(null, data, k.privateKey).toString('hex') }), true);
  }
  return md.toJSON();
}

const root = tufRoot();

// [name, input text]. String.raw keeps JSON escapes as written.
const cases = [
  ['empty-object', '{}'],
  ['empty-array', '[]'],
  ['empty-string', '""'],
  ['empty-key', '{"":1}'],
  ['empty-containers-nested', '{"e":{"":[]},"d":[{}],"c":"","b":[],"a":{}}'],
  ['scalars', '[true,false,null,0,1,-1]'],
  ['top-level-true', 'true'],
  ['top-level-null', 'null'],
  ['top-level-integer', '  42  '],
  ['whitespace', ' \n\t{ "b" :\r\n 2 , "a" : [ 1 ,\t2 ] }  \n'],
  ['whitespace-crlf-tabs', '{\r\n\t"b": 1,\r\n\t"a": [\r\n\t\t1,\r\n\t\t{ }\r\n\t]\r\n}\r\n'],
  ['whitespace-none', '{"z":[1,[2,[3]],{"y":{"x":[]}}],"a":"b"}'],
  ['sorted-keys', '{"b":1,"a":2,"c":{"z":1,"y":2,"x":{"b":[],"a":{}}}}'],
  ['case-order', '{"a":1,"B":2,"A":3,"b":4,"_":5,"0":6,"~":7," ":8}'],
  ['numeric-keys', '{"10":1,"9":2,"1":3,"01":4,"-1":5,"1.5":6,"0":7,"00":8,"1e3":9}'],
  ['int-keys-object-order', '{"2":"b","10":"c","1":"a","4294967295":"d","4294967296":"e"}'],
  ['prefix-keys', '{"ab":1,"a":2,"abc":3,"aa":4}'],
  ['prototype-like-keys', '{"valueOf":1,"toString":2,"hasOwnProperty":3,"constructor":4,"prototype":5,"__proto":6,"proto__":7}'],
  ['large-ints', '[9007199254740991,-9007199254740991,4294967296,-2147483649,1000000000000]'],
  ['int-boundaries', '[2147483647,2147483648,-2147483648,4294967295,9007199254740990,-9007199254740990,255,256,65535,65536]'],
  ['zero', '[0,{"zero":0},[0,0]]'],
  ['negative-ints', '[-1,-10,-100,-9007199254740991]'],
  ['escape-quote', String.raw`["say \"hi\"","\"","\"\""]`],
  ['escape-backslash', String.raw`["C:\\path\\to","\\","\\\\\""]`],
  ['escape-slash', String.raw`["a\/b","<\/script>","\/\/"]`],
  ['escape-controls', String.raw`["\b\f\n\r\t"]`],
  ['escape-nul', String.raw`["a\u0000b"]`],
  ['escape-unit-separator', String.raw`["\u001f\u0001\u007f"]`],
  ['escape-all-controls', `["${allControlEscapes}\\u007f"]`],
  ['escape-every-kind', String.raw`{"k\"\\\/\b\f\n\r\t":"\" \\ \/ \b \f \n \r \t \u0000 \u001f \u007f \u2028 \uD83D\uDE00"}`],
  ['escape-line-separators', String.raw`["\u2028\u2029"]`],
  ['escape-surrogate-pair', String.raw`["\ud83d\ude00"]`],
  ['escape-surrogate-pair-uppercase', String.raw`["\uD83D\uDE00","\uD800\uDC00","\uDBFF\uDFFF"]`],
  ['escape-bmp', String.raw`["\u00e9\u4e2d\uffff"]`],
  ['escape-hex-case', String.raw`["\u00E9\u00e9\u4E2D\uFFFD\uFeFf"]`],
  ['escaped-keys', String.raw`{"a\nb":1,"a\"b":2,"a\\b":3}`],
  ['key-with-unicode-escape', String.raw`{"\u0041":1,"B":2,"\u0061":3}`],
  ['escaped-astral-key-order', String.raw`{"\uD83D\uDE00":1,"\uE000":2,"\uFFFF":3,"\uD800\uDC00":4,"\uD7FF":5}`],
  ['raw-latin', '["caf\u00e9","na\u00efve","\u00df"]'],
  ['raw-cjk', '{"\u4e2d\u6587":"\u65e5\u672c\u8a9e"}'],
  ['raw-emoji', '["\u{1F600}\u{1F680}"]'],
  ['raw-astral-planes', '["\u{10000}","\u{1D11E}","\u{20000}","\u{E0041}","\u{10FFFF}"]'],
  ['raw-combining', '["e\u0301","\u0065\u0308","a\u0300\u0301\u0302\u0303"]'],
  ['raw-rtl', '{"\u05e9\u05dc\u05d5\u05dd":"\u0645\u0631\u062d\u0628\u0627"}'],
  ['raw-bidi-controls', '["\u202eabc\u202c","\u200f\u200e","\u2066x\u2069"]'],
  ['raw-zero-width', '["a\u200bb\u200dc\ufeff"]'],
  ['raw-noncharacters', '["\ufffe","\uffff","\ufdd0","\u{1FFFE}"]'],
  ['raw-del-and-c1-controls', '["\u007f","\u0080\u0085\u009f"]'],
  ['raw-line-separators', '{"\u2028":"\u2029"}'],
  ['astral-vs-private-use-keys', '{"\uff21":1,"\u{1F600}":2,"\ue000":3,"\u{10000}":4}'],
  ['astral-vs-bmp-keys', '{"\uffff":1,"\u{1F4A9}":2,"z":3,"\u00ff":4}'],
  ['astral-prefix-keys', '{"a\u{1F600}":1,"a\uffee":2,"a":3}'],
  ['astral-vs-replacement-keys', '{"\ufffd":1,"\u{1F600}":2,"\ufb01":3,"\u{E0001}":4,"\uf8ff":5}'],
  ['emoji-sequence-keys', '{"\u{1F468}\u200d\u{1F469}\u200d\u{1F467}":1,"\u{1F1FA}\u{1F1F8}":2,"\u{1F44D}\u{1F3FD}":3,"\u2764\ufe0f":4}'],
  ['keys-differ-in-combining', '{"e\u0301":1,"\u00e9":2}'],
  ['deep-arrays', nestedArrays(50)],
  ['deep-objects', nestedObjects(50)],
  ['deep-mixed', nestedMixed(25)],
  ['mixed-nesting', '{"a":[{"b":[{"c":[1,{"d":null}]}]}],"e":[[[],[{}]]]}'],
  ['long-string', JSON.stringify('x'.repeat(5000))],
  ['many-keys', JSON.stringify(Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`key-${(i * 7919) % 1000}`, i])))],
  ['array-order-kept', '[3,1,2,"b","a"]'],
  ['booleans-in-objects', '{"t":true,"f":false,"n":null}'],
  ['key-with-spaces', '{"a b":1," a":2,"a ":3}'],
  ['string-with-json', String.raw`["{\"nested\": [1, 2]}"]`],
  ['tab-newline-raw-in-output', String.raw`{"multi\nline":"tab\there"}`],
  ['tuf-key', '{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"}}'],
  ['tuf-targets-custom', String.raw`{"_type":"targets","spec_version":"1.0.31","version":3,"expires":"2030-01-01T00:00:00Z","targets":{"fw/image v1.bin":{"length":1024,"hashes":{"sha256":"ab"},"custom":{"kind":"security","cves":["CVE-2026-0001"],"risks_mitigated":"Fixes a \"remote\" issue\n"}}}}`],
  ['tuf-delegations', '{"keys":{},"roles":[{"name":"team/ns:1","keyids":[],"threshold":1,"terminating":false,"paths":["t/*","t/[ab]?"]}]}'],
  ['unknown-fields', '{"signed":{"x-vendor":{"z":1,"a":[true]},"_type":"timestamp"},"signatures":[]}'],
  ['tuf-root-signed', JSON.stringify(root.signed, null, 2)],
  ['tuf-root-envelope', `${JSON.stringify(root, null, 1)}\n`],
];

// A strict JSON reader that refuses what JavaScript would not round-trip faithfully.
function checkRepresentable(text) {
  let i = 0;
  const fail = (why) => { throw new Error(`${why} at offset ${i}`); };
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i += 1; };
  const str = () => {
    const start = i;
    i += 1;
    while (text[i] !== '"') {
      if (i >= text.length) fail('unterminated string');
      i += text[i] === '\\' ? (text[i + 1] === 'u' ? 6 : 2) : 1;
    }
    i += 1;
    const s = JSON.parse(text.slice(start, i));
    if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s)) fail('lone surrogate');
    return s;
  };
  const value = (depth) => {
    ws();
    if (depth > 200) fail('too deep');
    const c = text[i];
    if (c === '{') {
      i += 1;
      const seen = new Set();
      ws();
      if (text[i] === '}') { i += 1; return; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected key');
        const k = str();
        if (k === '__proto__') fail('"__proto__" key');
        if (seen.has(k)) fail(`duplicate key ${JSON.stringify(k)}`);
        seen.add(k);
        ws();
        if (text[i] !== ':') fail('expected :');
        i += 1;
        value(depth + 1);
        ws();
        if (text[i] === ',') { i += 1; continue; }
        if (text[i] === '}') { i += 1; return; }
        fail('expected , or }');
      }
    } else if (c === '[') {
      i += 1;
      ws();
      if (text[i] === ']') { i += 1; return; }
      for (;;) {
        value(depth + 1);
        ws();
        if (text[i] === ',') { i += 1; continue; }
        if (text[i] === ']') { i += 1; return; }
        fail('expected , or ]');
      }
    } else if (c === '"') {
      str();
    } else {
      const m = /^(?:true|false|null|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)/.exec(text.slice(i));
      if (!m) fail('unexpected token');
      const tok = m[0];
      if (/[.eE]/.test(tok) && !/^(true|false)$/.test(tok)) fail(`non-integer number ${tok}`);
      if (tok === '-0') fail('-0');
      if (/^-?[0-9]/.test(tok) && !Number.isSafeInteger(Number(tok))) fail(`integer beyond 2^53-1: ${tok}`);
      i += tok.length;
    }
  };
  value(0);
  ws();
  if (i !== text.length) fail('trailing text');
}

const README = `# Canonical JSON corpus

\`inputs/NNN-name.json\` are JSON texts (UTF-8); \`expected/NNN-name.canon\` are the exact bytes the
npm package \`@tufjs/canonical-json\` 2.0.0 produces for \`canonicalize(JSON.parse(input))\`, written
as UTF-8. upkeep's \`Canonicalize\` must produce the same bytes for every input
(\`CanonicalJsonTest.MatchesTufJsOnCorpus\`).

That canonical form (OLPC canonical JSON as TUF uses it) sorts object keys, drops insignificant
white space, escapes only \`"\` and \`\\\` and writes every other character raw, including control
characters, U+2028/U+2029 and non-ASCII text; integers are written in plain decimal. Keys sort by
UTF-16 code units (JavaScript's default sort), so a key starting with a character above U+FFFF
(encoded as surrogates D800–DBFF) sorts before one starting with U+E000–U+FFFF, unlike code
point order.

The corpus covers: empty containers, strings and keys; top-level scalars; white space variants;
key ordering (case, digits and number-like keys such as "10", "9", "1", "01", prefixes,
astral-plane keys against private-use, replacement and other high BMP keys, emoji sequences,
combining marks, escaped and raw forms); every JSON escape (\`\\" \\\\ \\/ \\b \\f \\n \\r \\t\`, all
\`\\u0000\`–\`\\u001f\`, \`\\u007f\`, \`\\u2028\`, surrogate pairs in either hex case); raw non-ASCII text
(Latin, CJK, emoji and other astral characters up to U+10FFFF, combining marks, right-to-left
scripts and bidi controls, zero-width characters, noncharacters, C1 controls); nesting 50 levels
deep; integers up to ±(2^53−1); and real TUF metadata, including a root (\`signed\` alone and the
signed envelope) built with \`@tufjs/models\` from fixed keys.

Inputs JavaScript cannot represent faithfully are excluded, and the generator refuses them:
floating-point numbers and exponents, integers beyond ±(2^53−1), \`-0\`, lone surrogates, duplicate
keys and \`"__proto__"\` keys. What upkeep does with those is covered by its own unit tests.

Regenerate (deterministic: the same bytes every run) with

    node tools/tufjs/gen-canonical-corpus.js tests/testdata/canonical-json

or \`npm run corpus\` in \`tools/tufjs\`.
`;

function main(outDir) {
  const names = new Set();
  for (const [name, text] of cases) {
    if (names.has(name)) throw new Error(`duplicate case name ${name}`);
    names.add(name);
    try {
      checkRepresentable(text);
    } catch (e) {
      throw new Error(`case ${name}: ${e.message}`);
    }
  }
  fs.rmSync(path.join(outDir, 'inputs'), { recursive: true, force: true });
  fs.rmSync(path.join(outDir, 'expected'), { recursive: true, force: true });
  fs.mkdirSync(path.join(outDir, 'inputs'), { recursive: true });
  fs.mkdirSync(path.join(outDir, 'expected'), { recursive: true });
  cases.forEach(([name, text], i) => {
    const id = `${String(i + 1).padStart(3, '0')}-${name}`;
    fs.writeFileSync(path.join(outDir, 'inputs', `${id}.json`), Buffer.from(text, 'utf8'));
    fs.writeFileSync(path.join(outDir, 'expected', `${id}.canon`), Buffer.from(canonicalize(JSON.parse(text)), 'utf8'));
  });
  fs.writeFileSync(path.join(outDir, 'README.md'), README);
  console.log(`wrote ${cases.length} cases to ${outDir}`);
}

if (process.argv.length !== 3 || process.argv[2].startsWith('-')) {
  console.error('usage: gen-canonical-corpus.js OUTDIR');
  process.exit(2);
}
main(process.argv[2]);

#!/usr/bin/env node
'use strict';
// Writes the canonical JSON corpus: OUTDIR/inputs/NNN-name.json (input texts) and
// OUTDIR/expected/NNN-name.canon (the bytes @tufjs/canonical-json produces for
// canonicalize(JSON.parse(input)), as UTF-8). upkeep's Canonicalize must match byte for byte.
//
// Inputs JavaScript cannot represent faithfully are left out: floats and exponents, integers
// beyond +/-(2^53 - 1), lone surrogates, duplicate keys and "__proto__" keys.
//
//   node gen-canonical-corpus.js OUTDIR

const fs = require('fs');
const path = require('path');
const { canonicalize } = require('@tufjs/canonical-json');

const nested = (depth) => '['.repeat(depth) + '"deep"' + ']'.repeat(depth);
const nestedObjects = (depth) => '{"k":'.repeat(depth) + '1' + '}'.repeat(depth);

const cases = [
  ['empty-object', '{}'],
  ['empty-array', '[]'],
  ['empty-string', '""'],
  ['empty-key', '{"":1}'],
  ['scalars', '[true,false,null,0,1,-1]'],
  ['whitespace', ' \n\t{ "b" :\r\n 2 , "a" : [ 1 ,\t2 ] }  \n'],
  ['sorted-keys', '{"b":1,"a":2,"c":{"z":1,"y":2,"x":{"b":[],"a":{}}}}'],
  ['case-order', '{"a":1,"B":2,"A":3,"b":4,"_":5,"0":6}'],
  ['numeric-keys', '{"10":1,"9":2,"1":3,"01":4,"-1":5,"1.5":6}'],
  ['prefix-keys', '{"ab":1,"a":2,"abc":3,"aa":4}'],
  ['large-ints', '[9007199254740991,-9007199254740991,4294967296,-2147483649,1000000000000]'],
  ['zero-forms', '[0,-0]'],
  ['escape-quote', '["say \\"hi\\""]'],
  ['escape-backslash', '["C:\\\\path\\\\to"]'],
  ['escape-slash', '["a\\/b","</script>"]'],
  ['escape-controls', '["\\b\\f\\n\\r\\t"]'],
  ['escape-nul', '["a\\u0000b"]'],
  ['escape-unit-separator', '["\\u001f\\u0001\\u007f"]'],
  ['escape-line-separators', '["\\u2028\\u2029"]'],
  ['escape-surrogate-pair', '["\\ud83d\\ude00"]'],
  ['escape-bmp', '["\\u00e9\\u4e2d\\uffff"]'],
  ['escaped-keys', '{"a\\nb":1,"a\\"b":2,"a\\\\b":3}'],
  ['raw-latin', '["caf\u00e9","na\u00efve"]'],
  ['raw-cjk', '{"\u4e2d\u6587":"\u65e5\u672c\u8a9e"}'],
  ['raw-emoji', '["\u{1F600}\u{1F680}"]'],
  ['raw-combining', '["e\u0301","\u0065\u0308"]'],
  ['raw-rtl', '{"\u05e9\u05dc\u05d5\u05dd":"\u0645\u0631\u062d\u0628\u0627"}'],
  ['raw-zero-width', '["a\u200bb\u200dc\ufeff"]'],
  ['astral-vs-private-use-keys', '{"\uff21":1,"\u{1F600}":2,"\ue000":3,"\u{10000}":4}'],
  ['astral-vs-bmp-keys', '{"\uffff":1,"\u{1F4A9}":2,"z":3,"\u00ff":4}'],
  ['astral-prefix-keys', '{"a\u{1F600}":1,"a\uffee":2,"a":3}'],
  ['keys-differ-in-combining', '{"e\u0301":1,"\u00e9":2}'],
  ['deep-arrays', nested(50)],
  ['deep-objects', nestedObjects(50)],
  ['mixed-nesting', '{"a":[{"b":[{"c":[1,{"d":null}]}]}],"e":[[[],[{}]]]}'],
  ['long-string', JSON.stringify('x'.repeat(5000))],
  ['many-keys', JSON.stringify(Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`key-${(i * 7919) % 1000}`, i])))],
  ['array-order-kept', '[3,1,2,"b","a"]'],
  ['booleans-in-objects', '{"t":true,"f":false,"n":null}'],
  ['key-with-spaces', '{"a b":1," a":2,"a ":3}'],
  ['key-with-unicode-escape', '{"\\u0041":1,"B":2}'],
  ['string-with-json', '["{\\"nested\\": [1, 2]}"]'],
  ['tab-newline-raw-in-output', '{"multi\\nline":"tab\\there"}'],
  ['negative-ints', '[-1,-10,-100,-9007199254740991]'],
  ['int-keys-object-order', '{"2":"b","10":"c","1":"a"}'],
  ['tuf-key', '{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"}}'],
  ['tuf-targets-custom', '{"_type":"targets","spec_version":"1.0.31","version":3,"expires":"2030-01-01T00:00:00Z","targets":{"fw/image v1.bin":{"length":1024,"hashes":{"sha256":"ab"},"custom":{"kind":"security","cves":["CVE-2026-0001"],"risks_mitigated":"Fixes a \\"remote\\" issue\\n"}}}}'],
  ['tuf-delegations', '{"keys":{},"roles":[{"name":"team/ns:1","keyids":[],"threshold":1,"terminating":false,"paths":["t/*","t/[ab]?"]}]}'],
  ['unknown-fields', '{"signed":{"x-vendor":{"z":1,"a":[true]},"_type":"timestamp"},"signatures":[]}'],
];

function main(outDir) {
  const rootFile = path.join(__dirname, '..', '..', 'tests', 'testdata', 'tufjs', 'basic', 'initial_root.json');
  if (fs.existsSync(rootFile)) {
    cases.push(['tuf-root-signed', JSON.stringify(JSON.parse(fs.readFileSync(rootFile, 'utf8')).signed, null, 2)]);
    cases.push(['tuf-root-envelope', fs.readFileSync(rootFile, 'utf8')]);
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
  console.log(`wrote ${cases.length} cases to ${outDir}`);
}

if (!process.argv[2]) {
  console.error('usage: gen-canonical-corpus.js OUTDIR');
  process.exit(2);
}
main(process.argv[2]);

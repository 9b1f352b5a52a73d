// Writes SDF glyph ranges (MapLibre's {fontstack}/{start}-{end}.pbf) for one font stack,
// made by fontnik (FreeType) from the given font files and composited by
// @mapbox/glyph-pbf-composite: a code point comes from the first font that has it.
// Usage: node glyphs.js OUT_DIR "Stack Name" font1.ttf [font2.otf ...]
'use strict';
const fs = require('fs');
const path = require('path');
const fontnik = require('fontnik');
const { combine } = require('@mapbox/glyph-pbf-composite');

const [out, name, ...files] = process.argv.slice(2);
if (!out || !name || !files.length) {
  console.error('usage: glyphs.js OUT_DIR STACK_NAME FONT [FONT ...]');
  process.exit(2);
}
const fonts = files.map(f => fs.readFileSync(f));
const dir = path.join(out, name);
fs.mkdirSync(dir, { recursive: true });

const range = (font, start) => new Promise((resolve, reject) =>
  fontnik.range({ font, start, end: start + 255 }, (err, pbf) => err ? reject(err) : resolve(pbf)));

(async () => {
  let written = 0;
  for (let start = 0; start < 65536; start += 256) {
    const parts = await Promise.all(fonts.map(f => range(f, start)));
    // A range no font has a glyph in is a fontstack with no glyphs: a few bytes.
    const pbf = combine(parts, name);
    if (pbf.length > 64) {
      fs.writeFileSync(path.join(dir, `${start}-${start + 255}.pbf`), pbf);
      written += 1;
    }
    if (start % 8192 === 0) process.stderr.write(`${name}: ${start}/65536\r`);
  }
  process.stderr.write(`${name}: ${written} ranges\n`);
})().catch(err => { console.error(String(err)); process.exit(1); });

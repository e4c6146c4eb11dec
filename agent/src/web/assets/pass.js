// The student pass (design §5.3): a non-extractable ECDSA P-256 key made with WebCrypto
// and kept in IndexedDB; its public half is registered with the agent; the page shows
// KP1.{student}.{unix_time}.{sig} as a QR code, re-signed every few seconds.
//
// The QR encoder below is self-contained (byte mode, error correction M, versions 1-20)
// because the page must not fetch anything from outside the college's agent, and the
// private key never leaves the browser, so the agent cannot draw the code.
(function () {
  "use strict";

  // ---- QR encoder (ISO/IEC 18004), after Project Nayuki's reference design ----
  const ECC_PER_BLOCK_M = [0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26];
  const BLOCKS_M = [0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16];
  const MAX_VERSION = 20;

  function rawDataModules(version) {
    let result = (16 * version + 128) * version + 64;
    if (version >= 2) {
      const aligns = Math.floor(version / 7) + 2;
      result -= (25 * aligns - 10) * aligns - 55;
      if (version >= 7) result -= 36;
    }
    return result;
  }

  function dataCodewords(version) {
    return Math.floor(rawDataModules(version) / 8) - ECC_PER_BLOCK_M[version] * BLOCKS_M[version];
  }

  function gfMultiply(x, y) {
    let z = 0;
    for (let i = 7; i >= 0; i--) {
      z = (z << 1) ^ ((z >>> 7) * 0x11d);
      z ^= ((y >>> i) & 1) * x;
    }
    return z;
  }

  function rsDivisor(degree) {
    const result = new Array(degree).fill(0);
    result[degree - 1] = 1;
    let root = 1;
    for (let i = 0; i < degree; i++) {
      for (let j = 0; j < degree; j++) {
        result[j] = gfMultiply(result[j], root);
        if (j + 1 < degree) result[j] ^= result[j + 1];
      }
      root = gfMultiply(root, 0x02);
    }
    return result;
  }

  function rsRemainder(data, divisor) {
    const result = new Array(divisor.length).fill(0);
    for (const byte of data) {
      const factor = byte ^ result.shift();
      result.push(0);
      divisor.forEach((coefficient, i) => { result[i] ^= gfMultiply(coefficient, factor); });
    }
    return result;
  }

  function alignmentPositions(version, size) {
    if (version === 1) return [];
    const aligns = Math.floor(version / 7) + 2;
    const step = Math.floor((version * 8 + aligns * 3 + 5) / (aligns * 4 - 4)) * 2;
    const result = [6];
    for (let position = size - 7; result.length < aligns; position -= step) result.splice(1, 0, position);
    return result;
  }

  function encodeQr(text) {
    const bytes = Array.from(new TextEncoder().encode(text));
    let version = 1;
    for (; version <= MAX_VERSION; version++) {
      const countBits = version <= 9 ? 8 : 16;
      if (4 + countBits + bytes.length * 8 <= dataCodewords(version) * 8) break;
    }
    if (version > MAX_VERSION) throw new Error("text too long for a pass QR");
    const capacity = dataCodewords(version) * 8;
    const bits = [];
    const put = (value, length) => { for (let i = length - 1; i >= 0; i--) bits.push((value >>> i) & 1); };
    put(0x4, 4);
    put(bytes.length, version <= 9 ? 8 : 16);
    bytes.forEach((byte) => put(byte, 8));
    put(0, Math.min(4, capacity - bits.length));
    put(0, (8 - (bits.length % 8)) % 8);
    for (let pad = 0xec; bits.length < capacity; pad ^= 0xec ^ 0x11) put(pad, 8);
    const data = [];
    for (let i = 0; i < bits.length; i += 8) data.push(bits.slice(i, i + 8).reduce((acc, bit) => (acc << 1) | bit, 0));

    // Split into blocks, add error correction, interleave.
    const blocks = BLOCKS_M[version];
    const eccLength = ECC_PER_BLOCK_M[version];
    const rawCodewords = Math.floor(rawDataModules(version) / 8);
    const shortBlocks = blocks - (rawCodewords % blocks);
    const shortLength = Math.floor(rawCodewords / blocks);
    const divisor = rsDivisor(eccLength);
    const dataBlocks = [];
    for (let i = 0, k = 0; i < blocks; i++) {
      const block = data.slice(k, k + shortLength - eccLength + (i < shortBlocks ? 0 : 1));
      k += block.length;
      const ecc = rsRemainder(block, divisor);
      if (i < shortBlocks) block.push(0);
      dataBlocks.push(block.concat(ecc));
    }
    const codewords = [];
    for (let i = 0; i < dataBlocks[0].length; i++) {
      dataBlocks.forEach((block, j) => {
        if (i !== shortLength - eccLength || j >= shortBlocks) codewords.push(block[i]);
      });
    }

    const size = version * 4 + 17;
    const modules = Array.from({ length: size }, () => new Array(size).fill(false));
    const isFunction = Array.from({ length: size }, () => new Array(size).fill(false));
    const setFunction = (x, y, dark) => { modules[y][x] = dark; isFunction[y][x] = true; };
    for (let i = 0; i < size; i++) { setFunction(6, i, i % 2 === 0); setFunction(i, 6, i % 2 === 0); }
    const finder = (cx, cy) => {
      for (let dy = -4; dy <= 4; dy++) {
        for (let dx = -4; dx <= 4; dx++) {
          const x = cx + dx, y = cy + dy;
          if (x < 0 || y < 0 || x >= size || y >= size) continue;
          const distance = Math.max(Math.abs(dx), Math.abs(dy));
          setFunction(x, y, distance !== 2 && distance !== 4);
        }
      }
    };
    finder(3, 3); finder(size - 4, 3); finder(3, size - 4);
    const aligns = alignmentPositions(version, size);
    aligns.forEach((ay, i) => aligns.forEach((ax, j) => {
      const last = aligns.length - 1;
      if ((i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0)) return;
      for (let dy = -2; dy <= 2; dy++) {
        for (let dx = -2; dx <= 2; dx++) setFunction(ax + dx, ay + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
      }
    }));
    const drawFormat = (mask) => {
      const formatData = (0 << 3) | mask; // error correction M = 0b00
      let remainder = formatData;
      for (let i = 0; i < 10; i++) remainder = (remainder << 1) ^ ((remainder >>> 9) * 0x537);
      const format = ((formatData << 10) | remainder) ^ 0x5412;
      const bit = (i) => ((format >>> i) & 1) !== 0;
      for (let i = 0; i <= 5; i++) setFunction(8, i, bit(i));
      setFunction(8, 7, bit(6));
      setFunction(8, 8, bit(7));
      setFunction(7, 8, bit(8));
      for (let i = 9; i < 15; i++) setFunction(14 - i, 8, bit(i));
      for (let i = 0; i < 8; i++) setFunction(size - 1 - i, 8, bit(i));
      for (let i = 8; i < 15; i++) setFunction(8, size - 15 + i, bit(i));
      setFunction(8, size - 8, true);
    };
    drawFormat(0);
    if (version >= 7) {
      let remainder = version;
      for (let i = 0; i < 12; i++) remainder = (remainder << 1) ^ ((remainder >>> 11) * 0x1f25);
      const versionBits = (version << 12) | remainder;
      for (let i = 0; i < 18; i++) {
        const dark = ((versionBits >>> i) & 1) !== 0;
        const a = size - 11 + (i % 3), b = Math.floor(i / 3);
        setFunction(a, b, dark);
        setFunction(b, a, dark);
      }
    }
    let bitIndex = 0;
    for (let right = size - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (let vertical = 0; vertical < size; vertical++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          const upward = ((right + 1) & 2) === 0;
          const y = upward ? size - 1 - vertical : vertical;
          if (!isFunction[y][x] && bitIndex < codewords.length * 8) {
            modules[y][x] = ((codewords[bitIndex >>> 3] >>> (7 - (bitIndex & 7))) & 1) !== 0;
            bitIndex++;
          }
        }
      }
    }
    const maskBit = (mask, x, y) => {
      switch (mask) {
        case 0: return (x + y) % 2 === 0;
        case 1: return y % 2 === 0;
        case 2: return x % 3 === 0;
        case 3: return (x + y) % 3 === 0;
        case 4: return (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0;
        case 5: return ((x * y) % 2) + ((x * y) % 3) === 0;
        case 6: return (((x * y) % 2) + ((x * y) % 3)) % 2 === 0;
        default: return (((x + y) % 2) + ((x * y) % 3)) % 2 === 0;
      }
    };
    const applyMask = (mask) => {
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) if (!isFunction[y][x] && maskBit(mask, x, y)) modules[y][x] = !modules[y][x];
      }
    };
    // Long runs, 2x2 blocks and imbalance make a code harder to read: pick the mask with
    // the lowest penalty (the standard's rules 1, 2 and 4).
    const penalty = () => {
      let score = 0, dark = 0;
      for (let y = 0; y < size; y++) {
        for (let pass = 0; pass < 2; pass++) {
          let run = 1;
          for (let x = 1; x <= size; x++) {
            const current = x < size && (pass ? modules[x][y] === modules[x - 1][y] : modules[y][x] === modules[y][x - 1]);
            if (current) { run++; continue; }
            if (run >= 5) score += run - 2;
            run = 1;
          }
        }
      }
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          if (modules[y][x]) dark++;
          if (x + 1 < size && y + 1 < size) {
            const c = modules[y][x];
            if (c === modules[y][x + 1] && c === modules[y + 1][x] && c === modules[y + 1][x + 1]) score += 3;
          }
        }
      }
      const total = size * size;
      score += (Math.ceil(Math.abs(dark * 20 - total * 10) / total) - 1) * 10;
      return score;
    };
    let best = 0, bestScore = Infinity;
    for (let mask = 0; mask < 8; mask++) {
      applyMask(mask);
      drawFormat(mask);
      const score = penalty();
      if (score < bestScore) { best = mask; bestScore = score; }
      applyMask(mask);
    }
    applyMask(best);
    drawFormat(best);
    return modules;
  }

  function qrSvg(modules) {
    const border = 4, size = modules.length + border * 2;
    let path = "";
    modules.forEach((row, y) => row.forEach((dark, x) => { if (dark) path += "M" + (x + border) + "," + (y + border) + "h1v1h-1z"; }));
    return '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + size + " " + size +
      '" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path fill="#000" d="' + path + '"/></svg>';
  }

  // ---- the pass ----
  const root = document.getElementById("pass");
  if (!root) return;
  const iin = root.dataset.iin;
  const registered = root.dataset.key || "";
  const csrf = root.dataset.csrf;
  const refreshMs = Number(root.dataset.refreshSecs || "5") * 1000;
  // The agent's clock decides freshness: correct the phone's by the offset seen at load.
  const clockOffset = Number(root.dataset.now) - Date.now() / 1000;
  const status = document.getElementById("pass-status");
  const box = document.getElementById("pass-qr");
  const now = () => Math.floor(Date.now() / 1000 + clockOffset);
  const { base64url, inStore } = window.kasipKeys;
  const openStore = () => window.kasipKeys.openStore("kasip-pass");

  async function signPass(privateKey) {
    const text = "KP1." + iin + "." + now();
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, new TextEncoder().encode(text));
    return text + "." + base64url(signature);
  }

  // The key registered for this phone's binding, or a new one registered now.
  async function passKey() {
    const db = await openStore();
    const stored = await inStore(db, "readonly", (keys) => keys.get(iin));
    if (stored && registered && stored.publicKey === registered) return stored.privateKey;
    status.textContent = root.dataset.textRegistering;
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const publicKey = base64url(await crypto.subtle.exportKey("raw", pair.publicKey));
    const response = await fetch("/pass/key", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-kasip-csrf": csrf },
      body: JSON.stringify({ public_key: publicKey, proof: await signPass(pair.privateKey) }),
    });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText);
    await inStore(db, "readwrite", (keys) => keys.put({ publicKey, privateKey: pair.privateKey }, iin));
    return pair.privateKey;
  }

  async function start() {
    if (!window.crypto || !crypto.subtle || !window.indexedDB) {
      status.textContent = root.dataset.textUnsupported;
      return;
    }
    try {
      const privateKey = await passKey();
      const show = async () => {
        const pass = await signPass(privateKey);
        box.innerHTML = qrSvg(encodeQr(pass));
        box.dataset.pass = pass;
        status.textContent = root.dataset.textReady;
      };
      await show();
      setInterval(() => show().catch((error) => { status.textContent = String(error); }), refreshMs);
    } catch (error) {
      status.textContent = root.dataset.textFailed + " " + String(error.message || error);
    }
  }

  start();
})();

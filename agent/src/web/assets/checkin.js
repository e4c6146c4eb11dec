// The phone's device key (design §5.2): a non-extractable ECDSA P-256 key made by the
// browser when the phone is bound, kept in IndexedDB. Its public half is registered with
// the binding; every check-in carries its signature over "KC1." + what the phone
// presented (the scanned token, or the code typed), so a copied cookie alone checks
// nobody in. One key per phone, kept across bindings: a phone is one device.
(function () {
  "use strict";
  const { base64url, inStore } = window.kasipKeys;
  const openStore = () => window.kasipKeys.openStore("kasip-device");

  // The phone's key pair, made on first use.
  async function deviceKey(create) {
    const db = await openStore();
    const stored = await inStore(db, "readonly", (keys) => keys.get("device"));
    if (stored || !create) return stored;
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const publicKey = base64url(await crypto.subtle.exportKey("raw", pair.publicKey));
    const entry = { publicKey, privateKey: pair.privateKey };
    await inStore(db, "readwrite", (keys) => keys.put(entry, "device"));
    return entry;
  }

  async function sign(key, presented) {
    const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.privateKey,
      new TextEncoder().encode("KC1." + presented));
    return base64url(signature);
  }

  function field(form, name, value) {
    let input = form.querySelector("input[name=" + name + "]");
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      form.appendChild(input);
    }
    input.value = value;
  }

  const supported = window.crypto && crypto.subtle && window.indexedDB;

  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

  // The student's passkey (design §5.10), when the registry's directory lists one: an
  // assertion over the check-in's challenge, after the phone's own fingerprint, face or
  // PIN check. Refused or unavailable, the check-in goes on without it (unverified).
  async function passkeyAssertion(form) {
    const challenge = form.dataset.passkeyChallenge;
    if (!challenge || !window.PublicKeyCredential || !navigator.credentials) return null;
    try {
      const credential = await navigator.credentials.get({
        publicKey: {
          challenge: bytes(challenge),
          rpId: form.dataset.passkeyRp,
          allowCredentials: [{ type: "public-key", id: bytes(form.dataset.passkeyCredential) }],
          userVerification: "required",
          timeout: 60000,
        },
      });
      const response = credential.response;
      return [credential.rawId, response.authenticatorData, response.clientDataJSON, response.signature]
        .map(base64url).join(".");
    } catch (error) {
      return null;
    }
  }

  // Signs what the form presents, then sends it. Without a key the form is sent as it
  // is, and the agent's answer says to bind the phone again.
  async function signAndSend(form, create, presented) {
    try {
      if (supported) {
        const key = await deviceKey(create);
        if (key) {
          if (create) field(form, "device_key", key.publicKey);
          if (presented) field(form, "device_signature", await sign(key, presented));
        }
      }
    } catch (error) {
      // Sent unsigned: the agent refuses it with a sentence the student can act on.
    }
    form.submit();
  }

  const scanned = document.getElementById("checkin");
  if (scanned) {
    passkeyAssertion(scanned).then((assertion) => {
      if (assertion) field(scanned, "passkey", assertion);
      signAndSend(scanned, false, scanned.dataset.token);
    });
  }

  const typed = document.getElementById("typed");
  if (typed) {
    typed.addEventListener("submit", (event) => {
      event.preventDefault();
      signAndSend(typed, false, typed.querySelector("input[name=code]").value);
    });
  }

  const bind = document.getElementById("bind");
  if (bind) {
    bind.addEventListener("submit", (event) => {
      event.preventDefault();
      signAndSend(bind, true, bind.dataset.token || "");
    });
  }
})();

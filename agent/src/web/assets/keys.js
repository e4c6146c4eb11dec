// What the phone's pages share about keys kept in the browser: base64url, and a small
// IndexedDB store of non-extractable WebCrypto keys (the pass key, the device key).
window.kasipKeys = (function () {
  "use strict";
  const base64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  function openStore(name) {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore("keys");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }

  function inStore(db, mode, action) {
    return new Promise((resolve, reject) => {
      const transaction = db.transaction("keys", mode);
      const request = action(transaction.objectStore("keys"));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
    });
  }

  return { base64url, openStore, inStore };
})();

// The registry's passkey enrolment (design §5.10): the one-time code proves the student,
// then the phone makes a discoverable passkey for the registry's domain with user
// verification (fingerprint, face or PIN). The page's sentences come in its data-*
// attributes, in the reader's language.
(function () {
  "use strict";
  const form = document.getElementById("passkey");
  const outcome = document.getElementById("outcome");
  if (!form) return;
  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const text = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const say = (message, good) => {
    outcome.textContent = message;
    outcome.className = good ? "ok" : "bad";
  };
  const post = (path, body) => fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say(form.dataset.unsupported, false);
      return;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    say(form.dataset.working, true);
    try {
      const started = await post("/v1/passkeys/options", {
        iin: form.iin.value.trim(),
        code: form.code.value.trim(),
      });
      if (!started.ok) {
        say(started.status === 403 || started.status === 429 ? form.dataset.wrongCode : form.dataset.failed, false);
        return;
      }
      const options = await started.json();
      const credential = await navigator.credentials.create({
        publicKey: {
          rp: { id: options.rp_id, name: options.rp_name },
          user: { id: bytes(options.user_id), name: options.user_name, displayName: options.user_name },
          challenge: bytes(options.challenge),
          pubKeyCredParams: options.algorithms.map((alg) => ({ type: "public-key", alg })),
          authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "required" },
          attestation: "none",
          timeout: 120000,
        },
      });
      const finished = await post("/v1/passkeys", {
        ceremony: options.ceremony,
        client_data_json: text(credential.response.clientDataJSON),
        attestation_object: text(credential.response.attestationObject),
      });
      if (finished.status === 201) {
        form.hidden = true;
        say(form.dataset.done, true);
      } else {
        say(finished.status === 403 ? form.dataset.wrongCode : form.dataset.failed, false);
      }
    } catch (error) {
      say(form.dataset.failed, false);
    } finally {
      button.disabled = false;
    }
  });
})();

// The projector: fetches the current code every second; the agent's clock decides it.
(function() {
  var shownStep = -1;
  function refresh() {
    // `shown`: the code already on screen comes back without its SVG.
    var shown = shownStep >= 0 ? '?shown=' + shownStep : '';
    fetch('/display/' + document.body.dataset.lesson + '/current' + shown, {cache: 'no-store', credentials: 'same-origin'})
      .then(function(r) { return r.json(); })
      .then(function(now) {
        document.getElementById('notice').textContent = now.notice;
        if (now.notice) {
          document.getElementById('qr').innerHTML = '';
          document.getElementById('typed').textContent = '';
          shownStep = -1;
        } else if (now.step !== shownStep) {
          document.getElementById('qr').innerHTML = now.svg;
          document.getElementById('typed').textContent = now.typed_code;
          shownStep = now.step;
        }
        document.getElementById('count').textContent = now.checked_in + '/' + now.expected;
      })
      .catch(function() {})
      .then(function() { setTimeout(refresh, 1000); });
  }
  refresh();
})();

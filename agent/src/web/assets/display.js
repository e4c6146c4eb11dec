// The projector: the agent pushes the current code and count (server-sent events) when
// they change; the agent's clock decides the code. A lost connection or a sign-out clears
// the code at once (a dead code must not stay on the wall) and says so; the browser
// reconnects by itself and the next event brings the code back.
(function() {
  var body = document.body;
  var notice = document.getElementById('notice');
  var qr = document.getElementById('qr');
  var typed = document.getElementById('typed');
  var shownStep = -1;
  function clearCode() {
    qr.innerHTML = '';
    typed.textContent = '';
    shownStep = -1;
  }
  function show(now) {
    notice.textContent = now.notice;
    if (now.notice) {
      clearCode();
    } else if (now.svg) {
      qr.innerHTML = now.svg;
      typed.textContent = now.typed_code;
      shownStep = now.step;
    }
    document.getElementById('count').textContent = now.checked_in + '/' + now.expected;
  }
  var feed = new EventSource('/display/' + body.dataset.lesson + '/events');
  feed.addEventListener('now', function(event) { show(JSON.parse(event.data)); });
  feed.addEventListener('signed-out', function(event) {
    feed.close();
    clearCode();
    notice.textContent = event.data;
    document.getElementById('signed-out').hidden = false;
  });
  feed.onerror = function() {
    if (feed.readyState === EventSource.CLOSED) { return; }
    clearCode();
    notice.textContent = body.dataset.connectionLost;
  };
})();

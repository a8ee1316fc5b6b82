// Live updates: the page follows the queue's events (GET /v1/queues/QUEUE/events, with the
// session cookie) and, a second after a change, replaces its <main> with a fresh copy of
// itself. Pages work the same without it; when the queue's events are off, nothing happens.
(function () {
  var url = document.body.dataset.events;
  if (!url || !window.EventSource || !window.fetch) return;
  var source = new EventSource(url);
  var pending = null;
  var live = document.getElementById("live");
  source.addEventListener("open", function () { live.hidden = false; });
  source.addEventListener("error", function () {
    live.hidden = true;
    if (source.readyState === EventSource.CLOSED) return;
  });
  source.addEventListener("job", function () {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      fetch(location.href, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
          var current = document.querySelector("main");
          if (fresh && current) current.innerHTML = fresh.innerHTML;
        })
        .catch(function () {});
    }, 1000);
  });
})();

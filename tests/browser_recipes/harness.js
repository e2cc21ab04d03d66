// Test harness shared by the recipe pages (not part of any recipe): the app server's URL comes
// from ?app=..., and each recipe reports through show() into #result (the callback's JSON
// answer) or #error.
window.APP_SERVER = new URLSearchParams(location.search).get('app') || location.origin;
window.show = function (id, text) {
  var el = document.getElementById(id);
  el.textContent = text;
  el.dataset.done = 'true';
};

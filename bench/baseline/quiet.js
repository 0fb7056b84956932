// Optional preload (`node -r ./quiet.js server.js`) that turns the seed's console.log into a
// no-op, to show how much of the seed's cost is its per-message logging. The published
// baseline does NOT use it: the seed logs every message, so the baseline does too (to
// /dev/null).
console.log = function () {};

// Script of the Bitpoll-shaped demo app; served from the collectstatic manifest.
document.addEventListener("DOMContentLoaded", function () {
    document.body.classList.add("js");
});

// Loaded between the vendored require.js and embed-amd.js on pages with widgets (see
// _config.yml, nb_ipywidgets_js). The widget manager's modules are named defines
// ("@jupyter-widgets/..."), and webpack takes its public path, from which it loads the icon
// fonts, from each module's URL. Without this mapping RequireJS places those URLs beside the
// page, and the fonts 404. Here they resolve to the vendored folder, which holds the fonts.
(function () {
  var base = new URL("vendor/ipywidgets/", document.currentScript.src).href;
  window.require.config({
    paths: {
      "@jupyter-widgets": base.replace(/\/$/, ""),
      "@jupyter-widgets/html-manager/dist": base.replace(/\/$/, ""),
    },
  });
})();

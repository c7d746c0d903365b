/* global window, SwaggerUIBundle */
// Starts Swagger UI on this server's own document. A file rather than an inline script, so the
// page's Content-Security-Policy can allow scripts from this origin only.
window.addEventListener('DOMContentLoaded', () => {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    displayOperationId: true,
    // No `?url=` or `?configUrl=` from the address bar: the page shows this API's document only.
    queryConfigEnabled: false,
    // Swagger UI would otherwise send the document to an online validator.
    validatorUrl: null,
  });
});

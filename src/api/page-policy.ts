import helmet from 'helmet';

/**
 * The Content-Security-Policy of the pages the API serves (`/docs`, `/dashboard`): scripts,
 * styles, images and requests from this origin only (images also as `data:` URIs), no inline
 * script or style, no plugins, no framing, no form posts. The JSON API needs none:
 * nothing renders its answers.
 */
export const pagePolicy = helmet.contentSecurityPolicy({
  useDefaults: false,
  directives: {
    defaultSrc: ["'none'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'"],
    imgSrc: ["'self'", 'data:'],
    connectSrc: ["'self'"],
    baseUri: ["'none'"],
    formAction: ["'none'"],
    frameAncestors: ["'none'"],
  },
});

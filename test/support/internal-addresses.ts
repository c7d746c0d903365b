import fc from 'fast-check';

/**
 * IPv4 addresses, as four octets, in the ranges a webhook may not reach by default: loopback,
 * RFC 1918 private, link-local (cloud metadata included) and CGNAT. Shared by the classifier's
 * property test and the fuzz suite's webhook URLs.
 */
export function internalIpv4(): fc.Arbitrary<number[]> {
  const octet = fc.integer({ min: 0, max: 255 });
  return fc.oneof(
    fc.tuple(fc.constant(10), octet, octet, octet),
    fc.tuple(fc.constant(127), octet, octet, octet),
    fc.tuple(fc.constant(172), fc.integer({ min: 16, max: 31 }), octet, octet),
    fc.tuple(fc.constant(192), fc.constant(168), octet, octet),
    fc.tuple(fc.constant(169), fc.constant(254), octet, octet),
    fc.tuple(fc.constant(100), fc.integer({ min: 64, max: 127 }), octet, octet),
  );
}

import { Dec, decimalToNumber, minorUnits, parseQuantity, roundMoney, toDecimalString } from '../../../src/domain';

describe('Dec', () => {
  it('is exact where binary floating point is not', () => {
    expect(new Dec('0.1').plus('0.2').toFixed()).toBe('0.3');
    expect(new Dec(0.1).plus(0.2).eq('0.3')).toBe(true);
  });

  it('keeps 60 significant digits and rounds half-up', () => {
    expect(Dec.precision).toBe(60);
    expect(Dec.rounding).toBe(Dec.ROUND_HALF_UP);
    expect(new Dec(1).dividedBy(3).toFixed()).toBe(`0.${'3'.repeat(60)}`);
    expect(new Dec(2).dividedBy(3).toFixed()).toBe(`0.${'6'.repeat(59)}7`);
  });
});

describe('minorUnits', () => {
  it.each([
    ['USD', 2],
    ['EUR', 2],
    ['usd', 2],
    ['JPY', 0],
    ['KRW', 0],
    ['VND', 0],
    ['CLP', 0],
    ['ISK', 0],
    ['UGX', 0],
    ['BHD', 3],
    ['KWD', 3],
    ['OMR', 3],
    ['JOD', 3],
    ['TND', 3],
    ['XYZ', 2],
  ] as const)('%s has %i decimals', (currency, digits) => {
    expect(minorUnits(currency)).toBe(digits);
  });
});

describe('roundMoney', () => {
  it('renders the fixed number of minor-unit digits', () => {
    expect(roundMoney('0.2', 'USD')).toBe('0.20');
    expect(roundMoney(7, 'JPY')).toBe('7');
    expect(roundMoney('1.5', 'BHD')).toBe('1.500');
    expect(roundMoney('0', 'USD')).toBe('0.00');
  });

  it('rounds half-up, once', () => {
    expect(roundMoney('1.005', 'USD')).toBe('1.01');
    expect(roundMoney('0.125', 'EUR')).toBe('0.13');
    expect(roundMoney('0.124999999', 'USD')).toBe('0.12');
    expect(roundMoney('2.675', 'USD')).toBe('2.68'); // 2.675 as a double would round down
    expect(roundMoney('2.5', 'JPY')).toBe('3');
    expect(roundMoney('3.5', 'JPY')).toBe('4');
    expect(roundMoney('1.0005', 'KWD')).toBe('1.001');
  });

  it('never renders negative zero', () => {
    expect(roundMoney('-0.001', 'USD')).toBe('0.00');
    expect(roundMoney('-0.005', 'USD')).toBe('-0.01');
  });
});

describe('toDecimalString and decimalToNumber', () => {
  it('renders plain decimals without exponent', () => {
    expect(toDecimalString('1e-7')).toBe('0.0000001');
    expect(toDecimalString('1e21')).toBe('1000000000000000000000');
    expect(toDecimalString('1250.50')).toBe('1250.5');
    expect(toDecimalString('-0')).toBe('0');
  });

  it('converts quantities to JSON numbers', () => {
    expect(decimalToNumber('1250.5')).toBe(1250.5);
    expect(decimalToNumber('15.2')).toBe(15.2);
    expect(decimalToNumber(new Dec('0.1').plus('0.2'))).toBe(0.3);
  });
});

describe('parseQuantity', () => {
  it('accepts JSON numbers and decimal strings with up to 6 decimals', () => {
    expect(parseQuantity(1000.25).toFixed()).toBe('1000.25');
    expect(parseQuantity('0.000001').toFixed()).toBe('0.000001');
    expect(parseQuantity('0').toFixed()).toBe('0');
  });

  it.each([[-1], ['-0.5'], ['0.0000001'], [Number.NaN], [Number.POSITIVE_INFINITY], ['abc'], ['']])('rejects %p', (value) => {
    expect(() => parseQuantity(value)).toThrow(RangeError);
  });
});

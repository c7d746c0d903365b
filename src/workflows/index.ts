/** The workflows the billing worker registers (the bundle's entry point). */
export { tenantBilling } from './tenant-billing';
export { periodInvoice } from './period-invoice';
export { invoiceRerun } from './invoice-rerun';
export { alertDelivery } from './alert-delivery';
export { retention } from './retention';

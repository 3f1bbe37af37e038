// Kubernetes naming rules, written once for every part of bulkhead that reads or writes
// Kubernetes objects (metadata readers, policy model, label selectors, the lab, the CLI).
// Each says what apimachinery's validation says for the same field.

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** RFC 1123 label (namespace names, most object names): at most 63 characters of a-z, 0-9
 * and "-", starting and ending with a letter or digit. */
export function isDnsLabel(text: string): boolean {
  return text.length <= 63 && DNS_LABEL.test(text);
}

/** A Namespace name: an RFC 1123 label. */
export function isNamespaceName(text: string): boolean {
  return isDnsLabel(text);
}

/** RFC 1035 label (Service names): an RFC 1123 label that starts with a letter. */
export function isDns1035Label(text: string): boolean {
  return text.length <= 63 && DNS1035_LABEL.test(text);
}

/** RFC 1123 subdomain (Pod and node names, label key prefixes): dot-separated labels, at
 * most 253 characters. */
export function isDnsSubdomain(text: string): boolean {
  return text.length <= 253 && DNS_SUBDOMAIN.test(text);
}

/** A label key or selector key: an optional DNS-subdomain prefix and "/", then a name of at
 * most 63 letters, digits, "-", "_", ".", starting and ending with a letter or digit. */
export function isQualifiedName(key: string): boolean {
  const slash = key.indexOf("/");
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    if (prefix === "" || !isDnsSubdomain(prefix)) return false;
  }
  return isLabelName(name);
}

/** The name part of a qualified name: 1 to 63 letters, digits, "-", "_", ".", starting and
 * ending with a letter or digit. */
export function isLabelName(text: string): boolean {
  return text.length > 0 && text.length <= 63 && LABEL_NAME.test(text);
}

/** A label value: empty, or at most 63 letters, digits, "-", "_", ".", starting and ending
 * with a letter or digit. */
export function isLabelValue(text: string): boolean {
  return text === "" || (text.length <= 63 && LABEL_NAME.test(text));
}

/** A named port (IANA service name): at most 15 characters of a-z, 0-9 and "-", at least
 * one letter, no "--", not starting or ending with "-". */
export function isPortName(text: string): boolean {
  return text.length <= 15 && DNS_LABEL.test(text) && /[a-z]/.test(text) && !text.includes("--");
}

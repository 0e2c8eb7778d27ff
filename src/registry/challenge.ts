/**
 * `WWW-Authenticate` challenges (RFC 7235), as registries send them:
 * `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"`.
 * Parameter values may be quoted strings holding commas, so a split on ',' is not enough.
 */
export interface Challenge {
  /** Lower-cased: `basic`, `bearer`. */
  scheme: string;
  /** Lower-cased parameter names. */
  params: Record<string, string>;
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const headers = Array.isArray(header) ? header : [header];
  return headers.flatMap(parseOne);
}

function parseOne(header: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = (): void => {
    while (i < n && /[\s,]/.test(header[i]!)) i += 1;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z/-]/.test(header[i]!)) i += 1;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipSpace();
    const token = readToken();
    if (token === '') {
      i += 1;
      continue;
    }
    let j = i;
    while (j < n && header[j] === ' ') j += 1;
    if (header[j] === '=' && current) {
      // name=value parameter of the current challenge
      i = j + 1;
      while (i < n && header[i] === ' ') i += 1;
      let value = '';
      if (header[i] === '"') {
        i += 1;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i += 1;
          value += header[i];
          i += 1;
        }
        i += 1;
      } else {
        const start = i;
        while (i < n && header[i] !== ',') i += 1;
        value = header.slice(start, i).trim();
      }
      current.params[token.toLowerCase()] = value;
    } else {
      current = { scheme: token.toLowerCase(), params: {} };
      challenges.push(current);
    }
  }
  return challenges;
}

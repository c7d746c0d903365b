import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiProblem, currentSession, signIn, signOut, whenSignedOut, type Session } from './api';
import { AlertsPage, SummariesPage, TenantsPage } from './admin';
import { TenantPage } from './tenant';
import './styles.css';

/** The route, from the URL's fragment: `#/tenants`, `#/tenants/<id>`, `#/alerts`, `#/summaries`. */
function useRoute(): string {
  const [route, setRoute] = useState(location.hash.replace(/^#/, '') || '/');
  useEffect(() => {
    const onHash = () => setRoute(location.hash.replace(/^#/, '') || '/');
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return route;
}

function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  return (
    <main id="main" class="signin">
      <h1>tally</h1>
      <form
        class="card"
        onSubmit={(e) => {
          e.preventDefault();
          setBusy(true);
          signIn(key).then(
            (s) => {
              setKey('');
              onSignedIn(s);
            },
            (err: Error) => {
              setError(err instanceof ApiProblem && err.status === 401 ? 'That key is unknown or revoked.' : err.message);
              setBusy(false);
            },
          );
        }}
      >
        <h2>Sign in</h2>
        <p class="muted">With your tenant API key, or the admin key for finance and operations. The key is exchanged for a session and is not kept by the browser.</p>
        <label>
          API key
          <input type="password" name="api_key" autocomplete="off" required value={key} onInput={(e) => setKey(e.currentTarget.value)} />
        </label>
        {error ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : null}
        <button type="submit" class="primary" disabled={busy}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const route = useRoute();
  const admin = session.principal.kind === 'admin';
  const own = session.principal.tenant_id;
  const home = admin ? '/tenants' : `/tenants/${encodeURIComponent(own ?? '')}`;
  const path = route === '/' ? home : route;
  useEffect(() => {
    if (route === '/') location.replace(`#${home}`);
  }, [route, home]);
  const match = /^\/tenants\/([^/]+)$/.exec(path);
  let page;
  if (match) page = <TenantPage key={match[1]} tenantId={decodeURIComponent(match[1]!)} admin={admin} />;
  else if (admin && path === '/tenants') page = <TenantsPage />;
  else if (admin && path === '/alerts') page = <AlertsPage />;
  else if (admin && path === '/summaries') page = <SummariesPage />;
  else
    page = (
      <main id="main" class="page">
        <h1>Page not found</h1>
        <p>
          <a href={`#${home}`}>Back to the start</a>
        </p>
      </main>
    );
  const link = (to: string, label: string) => (
    <li>
      <a href={`#${to}`} aria-current={path === to || (to !== home && path.startsWith(to)) ? 'page' : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <span class="brand">tally</span>
        <nav aria-label="Main">
          <ul>
            {admin ? (
              <>
                {link('/tenants', 'Tenants')}
                {link('/alerts', 'Open alerts')}
                {link('/summaries', 'Summaries')}
              </>
            ) : (
              link(home, 'Usage')
            )}
          </ul>
        </nav>
        <span class="who">{admin ? 'Finance & ops' : own}</span>
        <button type="button" class="signout" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      {page}
    </>
  );
}

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  useEffect(() => {
    whenSignedOut(() => setSession(null));
    currentSession().then(
      (s) => setSession(s ?? null),
      () => setSession(null),
    );
  }, []);
  if (session === undefined) return <p class="boot">Loading…</p>;
  if (session === null) return <SignIn onSignedIn={setSession} />;
  return (
    <Shell
      session={session}
      onSignOut={() => {
        void signOut().finally(() => {
          setSession(null);
          location.hash = '';
        });
      }}
    />
  );
}

render(<App />, document.getElementById('app')!);

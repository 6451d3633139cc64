// Preloaded into the cache tests' client (node --import): sends every fetch
// through the forward proxy in CACHE_TESTS_PROXY as absolute-URI requests.
// Node's own fetch ignores HTTP_PROXY, and a proxy agent that tunnels would
// turn plain-HTTP requests into CONNECT tunnels, which no proxy caches.
// undici is the suite's own dependency, resolved from its directory (cwd).
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const uri = process.env.CACHE_TESTS_PROXY
if (uri) {
  const require = createRequire(pathToFileURL(process.cwd() + '/').href)
  const undici = await import(pathToFileURL(require.resolve('undici')).href)
  const proxy = new undici.ProxyAgent({ uri, proxyTunnel: false })
  undici.setGlobalDispatcher(proxy)
  globalThis.fetch = undici.fetch
  // The interim-response tests build their own dispatcher,
  // `new undici.Agent().compose(collector)`, which would go straight to the
  // origin and test no proxy at all: compose the collector onto the proxy
  // agent instead, so those requests go through the proxy like the rest.
  const compose = undici.Dispatcher.prototype.compose
  undici.Agent.prototype.compose = function (...interceptors) {
    return compose.apply(proxy, interceptors)
  }
}

import { defineConfig } from "vite";

// The dashboard is served by `clearance serve` at `/`: its assets go into the Python package.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../src/clearance/server/_static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    // One script and one stylesheet: the Content-Security-Policy allows only 'self'.
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1024,
  },
});

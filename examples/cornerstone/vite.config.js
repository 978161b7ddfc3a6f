// Cornerstone3D's own Vite settings (its docs): dicom-parser is CommonJS,
// and its DICOM loader decodes in module workers that import codecs
// dynamically. (The `events` dependency stands in for Node's module, which
// vtk.js's XML writer imports.) p2u needs nothing here.
import { defineConfig } from 'vite';
import { viteCommonjs } from '@originjs/vite-plugin-commonjs';

export default defineConfig({
  plugins: [viteCommonjs()],
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  worker: { format: 'es' },
});

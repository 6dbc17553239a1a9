"""FerrousForge in Pyodide (filled in by the browser issue)."""

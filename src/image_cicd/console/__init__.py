"""The browser console and the execution history and graph it (and the CLI) show."""

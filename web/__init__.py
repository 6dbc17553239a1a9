"""The static browser build (page, ``forge.js``, runtimes, ``vendor/``), shipped as package
data of ``ferrousforge.web`` so ``forge web`` finds it in editable and normal installs."""

// Tollgate dashboard: the little script the pages need. It opens and closes dialogs (keyboard included: Escape
// closes a modal dialog, focus moves to its first field and back to the button that opened it) and copies a new
// key's value. Pages work without it except for those dialogs; it adds no markup of its own and loads nothing.
"use strict";

(function () {
  function firstField(dialog) {
    return dialog.querySelector(
      "[autofocus], input:not([type=hidden]):not([disabled]), select, textarea, button:not([disabled])"
    );
  }

  function open(dialog, opener) {
    if (dialog.open) {
      dialog.close();
    }
    dialog.showModal();
    const field = firstField(dialog);
    if (field) {
      field.focus();
    }
    if (opener) {
      dialog.addEventListener("close", function () { opener.focus(); }, { once: true });
    }
  }

  async function copy(source, status) {
    const text = source.textContent.trim();
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (_) {
        copied = false;
      }
    }
    if (!copied) {
      // Without the clipboard API (plain HTTP beyond localhost): select the value so Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      copied = document.execCommand && document.execCommand("copy");
    }
    if (status) {
      status.textContent = copied ? "Copied to the clipboard." : "Selected: press Ctrl+C (or ⌘C) to copy.";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-open]").forEach(function (button) {
      button.addEventListener("click", function () {
        const dialog = document.getElementById(button.dataset.open);
        if (dialog) {
          open(dialog, button);
        }
      });
    });
    document.querySelectorAll("[data-close]").forEach(function (button) {
      button.addEventListener("click", function () {
        const dialog = button.closest("dialog");
        if (dialog) {
          dialog.close();
        }
      });
    });
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        const source = document.getElementById(button.dataset.copy);
        const status = document.getElementById(button.dataset.copyStatus || "");
        if (source) {
          copy(source, status);
        }
      });
    });
    // A key's value is shown once: closing its dialog takes it out of the page too.
    document.querySelectorAll("dialog").forEach(function (dialog) {
      dialog.addEventListener("close", function () {
        // Reopening a dialog as modal closes it first; its close event comes after it is open again.
        if (!dialog.open) {
          dialog.querySelectorAll(".secret").forEach(function (secret) { secret.textContent = ""; });
        }
      });
    });
    // A dialog the server opened (a new key's value, a form sent back with an error) becomes modal at once.
    document.querySelectorAll("dialog[data-open-on-load]").forEach(function (dialog) {
      open(dialog, null);
    });
  });
})();

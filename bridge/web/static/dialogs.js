// Modal prompts on <dialog>: the confirmation before an operator action, and the bearer token
// the worker asks for (401). Each resolves when the dialog closes; Escape counts as Cancel.

import { h } from "./dom.js";

function open(dialog) {
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const value = dialog.returnValue;
      dialog.remove();
      resolve(value);
    });
    dialog.showModal();
  });
}

// The confirming button comes first, so Enter in a field means it (a form's default button
// is its first); the row is reversed on screen, Cancel on the left.
function buttons(confirmText, tone) {
  return h(
    "div",
    { class: "dialog-buttons" },
    h("button", { type: "submit", value: "confirm", class: ["button", tone] }, confirmText),
    h("button", { type: "submit", value: "cancel", formnovalidate: true, class: "button" }, "Cancel"),
  );
}

/**
 * Ask before an action. Resolves to {reason, user} on Confirm, null on Cancel.
 * `lines` are plain strings shown as paragraphs.
 */
export async function confirmAction({ title, lines = [], tone = "primary", user = "" }) {
  const reason = h("textarea", { name: "reason", rows: 2, maxlength: 500, "data-testid": "confirm-reason" });
  const who = h("input", {
    name: "user",
    value: user,
    autocomplete: "username",
    pattern: "[ -~]{0,100}",
    title: "Printable ASCII (it travels in an HTTP header)",
    "data-testid": "confirm-user",
  });
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": "confirm-title", "data-testid": "confirm-dialog" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "confirm-title" }, title),
      lines.map((line) => h("p", {}, line)),
      h("label", {}, h("span", {}, "Reason ", h("span", { class: "muted" }, "(kept in the history)")), reason),
      h("label", {}, h("span", {}, "Your name ", h("span", { class: "muted" }, "(recorded as who asked)")), who),
      buttons("Confirm", tone),
    ),
  );
  const answer = await open(dialog);
  return answer === "confirm" ? { reason: reason.value.trim(), user: who.value.trim() } : null;
}

/** Ask for the API bearer token; resolves to the token, or null on Cancel. */
export async function askToken(why = "") {
  const input = h("input", {
    type: "password",
    name: "token",
    required: true,
    autocomplete: "off",
    "data-testid": "token-input",
  });
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": "token-title", "data-testid": "token-dialog" },
    h(
      "form",
      { method: "dialog" },
      h("h2", { id: "token-title" }, "Bearer token needed"),
      h("p", {}, why ? `${why} ` : "", "This worker needs its API token (--api-token) for actions."),
      h("label", {}, h("span", {}, "Bearer token"), input),
      h("p", { class: "muted" }, "Kept for this browser tab only (sessionStorage)."),
      buttons("Use token", "primary"),
    ),
  );
  const answer = await open(dialog);
  return answer === "confirm" && input.value.trim() ? input.value.trim() : null;
}

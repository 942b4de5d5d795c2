// The patient's form: reads the Task and its Questionnaire through the FHIR API with the link's
// token, renders it with LHC-Forms, posts the QuestionnaireResponse and completes the Task.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("form-config").textContent);
  var labels = config.labels;
  var TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation";
  var CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression";
  var ITEM_CONTROL = "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl";
  // Answer weights are the scoring's business: LHC-Forms would print them beside each answer.
  var WEIGHTS = ["http://hl7.org/fhir/StructureDefinition/itemWeight", "http://hl7.org/fhir/StructureDefinition/ordinalValue"];
  var status = document.getElementById("form-status");
  var error = document.getElementById("form-error");
  var button = document.getElementById("submit");
  var container = document.getElementById("lforms-container");
  var task = null;
  var taskVersion = null;
  var questionnaire = null;

  function fhir(method, path, body, extra) {
    var headers = { Authorization: "Bearer " + config.token, Accept: "application/fhir+json" };
    if (body) headers["Content-Type"] = "application/fhir+json";
    Object.assign(headers, extra || {});
    return fetch("/" + path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined }).then(function (response) {
      return response.json().then(function (json) {
        if (!response.ok) throw { status: response.status, outcome: json };
        return { json: json, etag: response.headers.get("ETag") };
      });
    });
  }

  // The text in the page's language where the Questionnaire carries a translation, else as written.
  function translate(element, name, language) {
    var extensions = ((element["_" + name] || {}).extension || []).filter(function (e) { return e.url === TRANSLATION; });
    for (var i = 0; i < extensions.length; i++) {
      var parts = {};
      (extensions[i].extension || []).forEach(function (p) { parts[p.url] = p; });
      if (parts.lang && parts.lang.valueCode === language && parts.content) {
        element[name] = parts.content.valueString;
        return true;
      }
    }
    return false;
  }

  // The patient answers; the server calculates (scores are never shown to the patient). Choices
  // become radio buttons, which work with a thumb and the keyboard alike.
  function forThePatient(items, language, found) {
    return (items || []).filter(function (item) {
      return !(item.extension || []).some(function (e) { return e.url === CALCULATED; });
    }).map(function (item) {
      var copy = Object.assign({}, item);
      if (translate(copy, "text", language)) found.translated = true;
      if (copy.type === "choice" && copy.answerOption) {
        copy.answerOption = copy.answerOption.map(function (option) {
          var coding = Object.assign({}, option.valueCoding || {});
          translate(coding, "display", language);
          var kept = (option.extension || []).filter(function (e) { return WEIGHTS.indexOf(e.url) < 0; });
          return Object.assign({}, option, { valueCoding: coding, extension: kept.length ? kept : undefined });
        });
        copy.extension = (copy.extension || []).concat([{ url: ITEM_CONTROL, valueCodeableConcept: { coding: [{ system: "http://hl7.org/fhir/questionnaire-item-control", code: "radio-button" }] } }]);
      }
      copy.item = forThePatient(copy.item, language, found);
      if (!copy.item.length) delete copy.item;
      return copy;
    });
  }


  var STEPS_TO_START = { requested: ["accepted", "in-progress"], received: ["accepted", "in-progress"], accepted: ["in-progress"], ready: ["in-progress"] };

  // One status step of the Task (a PUT guarded by its version), remembered for the next one.
  function step(status, output) {
    var next = Object.assign({}, task, { status: status });
    if (output) next.output = output;
    delete next.meta;
    return fhir("PUT", "Task/" + task.id, next, taskVersion ? { "If-Match": taskVersion } : {}).then(function (answer) {
      task = answer.json;
      taskVersion = answer.etag;
    });
  }

  function failed(message) {
    error.textContent = message;
    error.hidden = false;
    button.disabled = false;
    button.textContent = labels.submit;
  }

  // The Task and its Questionnaire are fetched while the browser still evaluates LHC-Forms (this
  // script runs first of the deferred ones); the form is drawn once both are there.
  var lformsLoaded = new Promise(function (resolve) { document.addEventListener("DOMContentLoaded", resolve); });
  Promise.all([fhir("GET", "Task/" + config.taskId), fhir("GET", config.questionnaireRead)]).then(function (answers) {
    task = answers[0].json;
    taskVersion = answers[0].etag;
    return lformsLoaded.then(function () { return answers[1]; });
  }).then(function (answer) {
    questionnaire = answer.json;
    var found = { translated: false };
    var shown = Object.assign({}, questionnaire, { item: forThePatient(questionnaire.item, config.language, found) });
    translate(shown, "title", config.language);
    // The copyright is shown as plain text below the form (LHC-Forms' pop-over button has invalid ARIA).
    document.getElementById("copyright").textContent = questionnaire.copyright || "";
    delete shown.copyright;
    document.getElementById("items-language").hidden = found.translated || config.language === "en";
    return LForms.Util.addFormToPage(shown, container, { prepopulate: false, displayScoreWithAnswerText: false });
  }).then(function () {
    status.textContent = "";
    button.disabled = false;
    performance.mark("backpath:rendered");
  }).catch(function () {
    status.textContent = labels.link_invalid_text;
  });

  document.getElementById("answers").addEventListener("submit", function (event) {
    event.preventDefault();
    error.hidden = true;
    button.disabled = true;
    button.textContent = labels.sending;
    var response = LForms.Util.getFormFHIRData("QuestionnaireResponse", "R4", container);
    response.questionnaire = questionnaire.url;
    response.status = "completed";
    response.subject = { reference: config.patient };
    response.authored = new Date().toISOString();
    delete response.id;
    delete response.meta;
    // The Task follows the FHIR Task state machine to in-progress (the patient accepts and starts
    // it), then to completed with the answers as its output.
    var steps = (STEPS_TO_START[task.status] || []).reduce(function (previous, status) {
      return previous.then(function () { return step(status); });
    }, Promise.resolve());
    steps.then(function () {
      return fhir("POST", "QuestionnaireResponse", response);
    }).then(function (created) {
      var output = (task.output || []).concat([{ type: { text: "questionnaire-response" }, valueReference: { reference: "QuestionnaireResponse/" + created.json.id } }]);
      return step("completed", output);
    }).then(function () {
      document.getElementById("form-page").hidden = true;
      var thanks = document.getElementById("thanks");
      thanks.hidden = false;
      document.getElementById("thanks-title").focus();
    }).catch(function (problem) {
      failed(problem && problem.status === 422 ? labels.incomplete : labels.send_failed);
    });
  });
})();

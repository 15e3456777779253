// Browser-side checks beside the server's: a file larger than the counter's limit is flagged
// before it is sent. Everything is checked again on the server.
(function () {
  var inputs = document.querySelectorAll("input[type=file][data-max-bytes]");
  Array.prototype.forEach.call(inputs, function (input) {
    input.addEventListener("change", function () {
      var max = parseInt(input.getAttribute("data-max-bytes"), 10);
      var f = input.files && input.files[0];
      input.setCustomValidity(f && f.size > max ? "> " + max + " B" : "");
    });
  });
})();

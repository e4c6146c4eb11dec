// A scanned code's page posts its check-in at once: the camera app opened a GET.
document.getElementById('checkin').submit();

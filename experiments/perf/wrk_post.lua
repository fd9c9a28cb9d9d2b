-- wrk's request for the capacity experiment's cross-check: the route is a POST.
wrk.method = "POST"
